//! The file source: every file matching a path or glob, read once, newline-delimited JSON or
//! CSV. Files are read side by side, a chunk of each in turn, each with a watermark of its own
//! (like a Kafka partition), so that time-ordered files read together stay on time. When all
//! are read the source ends, and its watermark goes to the end of time: every window closes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::connector::decode::RecordDecoder;
use crate::connector::queue::table::ConnectorBatch;
use crate::connector::source::{
    SourceContext, SplitWatermarks, position_text, watermark_candidates,
};
use crate::connector::spec::{Encode, SourceSpec};
use crate::error::{Error, Result};

/// Bytes read from a file at a time (rounded down to whole lines).
const CHUNK_BYTES: usize = 1 << 20;

/// Where the source stands: bytes read of each file (`u64::MAX` once done).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Position {
    files: BTreeMap<String, u64>,
    #[serde(default)]
    watermarks: BTreeMap<String, i64>,
}

struct OpenFile {
    path: String,
    file: File,
    /// Bytes consumed (whole lines only).
    offset: u64,
    /// Bytes read past `offset`: a partial last line.
    carry: Vec<u8>,
    done: bool,
}

/// The files `pattern` names below `root`, sorted. A relative pattern is taken from `root`;
/// every file it matches, with `..` and symbolic links resolved, must lie below `root`
/// (`42501` otherwise), so that a client cannot read whatever the server can.
pub fn matching_files(root: &Path, pattern: &str) -> Result<Vec<PathBuf>> {
    let bad = |e: String| Error::user(crate::error::sqlstate::INVALID_PARAMETER_VALUE, e);
    let denied = |e: String| Error::user(crate::error::sqlstate::INSUFFICIENT_PRIVILEGE, e);
    let root = root.canonicalize().map_err(|e| {
        bad(format!(
            "the file source root {} cannot be used: {e} (see --file-source-root)",
            root.display()
        ))
    })?;
    let full = root.join(pattern);
    let full = full
        .to_str()
        .ok_or_else(|| bad(format!("path '{pattern}' is not UTF-8")))?;
    let mut files = Vec::new();
    for found in glob::glob(full).map_err(|e| bad(format!("bad path pattern '{pattern}': {e}")))? {
        let path = found.map_err(|e| bad(format!("path '{pattern}': {e}")))?;
        let real = path
            .canonicalize()
            .map_err(|e| bad(format!("path {}: {e}", path.display())))?;
        if !real.starts_with(&root) {
            return Err(denied(format!(
                "file source path '{pattern}' names {}, outside the file source root {} (see --file-source-root)",
                real.display(),
                root.display()
            )));
        }
        if real.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(bad(format!(
            "no file matches '{pattern}' below the file source root {}",
            root.display()
        )));
    }
    Ok(files)
}

/// Reads every file to its end.
pub fn run(context: &SourceContext, spec: &SourceSpec, pattern: &str) -> Result<()> {
    let Some(mut position) = context.resume::<Position>()? else {
        return Ok(());
    };
    let header = matches!(spec.encode, Encode::Csv { header: true, .. });
    let mut files = Vec::new();
    let mut splits = SplitWatermarks::new(Duration::MAX);
    for (index, path) in matching_files(&context.file_root, pattern)?
        .into_iter()
        .enumerate()
    {
        let name = path.display().to_string();
        let io = |e: std::io::Error| Error::io(format!("reading {name}: {e}"));
        let mut file = File::open(&path).map_err(io)?;
        let offset = position.files.get(&name).copied().unwrap_or(0);
        let done = offset == u64::MAX;
        if !done {
            file.seek(SeekFrom::Start(offset)).map_err(io)?;
        }
        splits.restore(index as i64, position.watermarks.get(&name).copied());
        if done {
            splits.finish(index as i64);
        }
        let mut open = OpenFile {
            path: name,
            file,
            offset,
            carry: Vec::new(),
            done,
        };
        if header && offset == 0 && !done {
            skip_header(&mut open)?;
        }
        files.push(open);
    }
    let mut decoder =
        RecordDecoder::new(context.table.def().payload_schema(), spec.encode.clone())?;
    let mut chunk = Vec::with_capacity(CHUNK_BYTES + 1024);
    while !context.stopped() {
        let mut progressed = false;
        for (index, file) in files.iter_mut().enumerate() {
            if file.done {
                continue;
            }
            progressed = true;
            let start = file.offset;
            let got = read_lines(file, &mut chunk)?;
            if got == 0 {
                file.done = true;
                splits.finish(index as i64);
                position.files.insert(file.path.clone(), u64::MAX);
                continue;
            }
            context.received(chunk.len());
            let decoded = decoder.decode_lines(&chunk)?;
            for (line, reason) in &decoded.bad {
                context.bad_record(
                    &format!(
                        "{} (line {} of the chunk at byte {start})",
                        file.path,
                        line + 1
                    ),
                    reason,
                )?;
            }
            let candidates = watermark_candidates(&context.table, &decoded.batch)?;
            splits.observe(
                candidates.as_ref(),
                std::iter::repeat_n(index as i64, decoded.batch.num_rows()),
            );
            position.files.insert(file.path.clone(), file.offset);
            if let Some(w) = splits.split(index as i64) {
                position.watermarks.insert(file.path.clone(), w);
            }
            context.write(ConnectorBatch {
                rows: decoded.batch,
                deleted_keys: None,
                watermark: splits.current(),
                position: position_text(&position),
                end_of_input: false,
            })?;
        }
        if !progressed {
            context.write_mark(None, &position, true)?;
            return Ok(());
        }
    }
    Ok(())
}

/// Reads the next whole lines of `file` into `chunk` (about [`CHUNK_BYTES`]); returns the
/// bytes put in `chunk`, 0 at the end of the file.
fn read_lines(file: &mut OpenFile, chunk: &mut Vec<u8>) -> Result<usize> {
    let io = |e: std::io::Error| Error::io(format!("reading {}: {e}", file.path));
    chunk.clear();
    chunk.append(&mut file.carry);
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = file.file.read(&mut buf).map_err(io)?;
        if n == 0 {
            // The end: a last line without a newline is still a line.
            let len = chunk.len();
            file.offset += len as u64;
            return Ok(len);
        }
        chunk.extend_from_slice(&buf[..n]);
        if let Some(last_newline) = chunk.iter().rposition(|&b| b == b'\n') {
            file.carry = chunk.split_off(last_newline + 1);
            let len = chunk.len();
            file.offset += len as u64;
            return Ok(len);
        }
    }
}

fn skip_header(file: &mut OpenFile) -> Result<()> {
    let io = |e: std::io::Error| Error::io(format!("reading {}: {e}", file.path));
    let mut byte = [0u8; 1];
    loop {
        let n = file.file.read(&mut byte).map_err(io)?;
        if n == 0 {
            return Ok(());
        }
        file.offset += 1;
        if byte[0] == b'\n' {
            return Ok(());
        }
    }
}
