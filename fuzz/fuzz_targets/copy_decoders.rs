//! The decoders of `COPY … FROM STDIN` data (text, CSV, binary), fed in pieces as `CopyData`
//! messages bring it: bad data is an error, never a panic. The first byte picks the format and
//! the size of the pieces; the rest is the data.

#![no_main]

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use libfuzzer_sys::fuzz_target;
use sluice::sql::copy::{CopyDecoder, CopyFormat, CopyIn};

const PIECES: [usize; 8] = [1, 2, 3, 5, 8, 13, 64, 4096];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let format = match pick & 3 {
        0 => CopyFormat::Text {
            delimiter: b'\t',
            null: "\\N".into(),
        },
        1 => CopyFormat::Csv {
            delimiter: b',',
            quote: b'"',
            escape: b'"',
            header: false,
        },
        2 => CopyFormat::Csv {
            delimiter: b';',
            quote: b'\'',
            escape: b'\\',
            header: true,
        },
        _ => CopyFormat::Binary,
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int32, false),
        Field::new("b", DataType::Utf8, true),
        Field::new("c", DataType::Boolean, true),
        Field::new("d", DataType::Decimal128(10, 2), true),
        Field::new("e", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new("f", DataType::Float64, true),
        Field::new("g", DataType::Date32, true),
        Field::new("h", DataType::Binary, true),
    ]));
    let copy = CopyIn {
        table: "t".into(),
        schema,
        columns: (0..8).collect(),
        format,
        defaults: Vec::new(),
    };
    let Ok(mut decoder) = CopyDecoder::new(copy) else {
        return;
    };
    let mut rows = 0;
    let mut out = |b: datafusion::arrow::array::RecordBatch| {
        rows += b.num_rows();
        Ok(())
    };
    for piece in rest.chunks(PIECES[usize::from(pick >> 2) % PIECES.len()]) {
        if decoder.push(piece, &mut out).is_err() {
            return;
        }
    }
    let _ = decoder.finish(&mut out);
});
