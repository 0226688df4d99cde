//! Decoding the `pgoutput` logical replication messages (protocol version 1) that carry row
//! changes: Relation, Insert, Update, Delete, Truncate. Begin and Commit are decoded by
//! `pgwire-replication`; Type and Origin messages are skipped.
//!
//! Values are in text form (PostgreSQL's output functions), or absent: NULL, or an unchanged
//! TOASTed value that the update did not touch.

use bytes::Bytes;

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// NULL.
    Null,
    /// An unchanged TOASTed value (not sent).
    Unchanged,
    /// The value in text form.
    Text(Bytes),
}

/// A relation's columns as the stream describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Its OID, which changes refer to.
    pub id: u32,
    /// Schema.
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Whether each column is part of the replica identity (key).
    pub key: Vec<bool>,
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A relation's description (sent before its first change, and after it changes).
    Relation(Relation),
    /// A new row.
    Insert {
        /// The relation.
        relation: u32,
        /// Its values.
        new: Vec<Value>,
    },
    /// A changed row; `old` holds the old key (or the whole old row, with `REPLICA IDENTITY
    /// FULL`) when the key changed or identity is full.
    Update {
        /// The relation.
        relation: u32,
        /// The old key (`K`: non-key columns NULL) or whole old row (`O`), when sent.
        old: Option<OldTuple>,
        /// The new values.
        new: Vec<Value>,
    },
    /// A deleted row: its key (or whole row).
    Delete {
        /// The relation.
        relation: u32,
        /// The key or row.
        old: Vec<Value>,
    },
    /// Relations emptied.
    Truncate {
        /// The relations.
        relations: Vec<u32>,
    },
    /// Anything else (Type, Origin, …).
    Other(u8),
}

/// The old values an update carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldTuple {
    /// `true` for a whole row (`O`, replica identity full); `false` for the key only (`K`).
    pub full: bool,
    /// The values (all columns; with `K`, the non-key ones are NULL).
    pub values: Vec<Value>,
}

/// A malformed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed pgoutput message: {}", self.0)
    }
}

struct Reader {
    data: Bytes,
    at: usize,
}

impl Reader {
    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.data.len() - self.at < n {
            return Err(DecodeError(format!(
                "needs {n} bytes at {}, has {}",
                self.at,
                self.data.len() - self.at
            )));
        }
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        self.at += 1;
        Ok(self.data[self.at - 1])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        let v = u16::from_be_bytes([self.data[self.at], self.data[self.at + 1]]);
        self.at += 2;
        Ok(v)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        let b = &self.data[self.at..self.at + 4];
        self.at += 4;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let rest = &self.data[self.at..];
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| DecodeError("unterminated string".into()))?;
        let s = String::from_utf8(rest[..end].to_vec())
            .map_err(|_| DecodeError("a name that is not UTF-8".into()))?;
        self.at += end + 1;
        Ok(s)
    }

    fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        let b = self.data.slice(self.at..self.at + n);
        self.at += n;
        Ok(b)
    }

    fn tuple(&mut self) -> Result<Vec<Value>, DecodeError> {
        let n = self.u16()? as usize;
        let mut values = Vec::with_capacity(n);
        for _ in 0..n {
            values.push(match self.u8()? {
                b'n' => Value::Null,
                b'u' => Value::Unchanged,
                b't' => {
                    let len = self.u32()? as usize;
                    Value::Text(self.bytes(len)?)
                }
                b'b' => return Err(DecodeError("a binary value (binary mode is off)".into())),
                other => return Err(DecodeError(format!("tuple value kind {other}"))),
            });
        }
        Ok(values)
    }
}

/// Decodes one message.
pub fn decode(data: Bytes) -> Result<Message, DecodeError> {
    let mut r = Reader { data, at: 0 };
    let tag = r.u8()?;
    Ok(match tag {
        b'R' => {
            let id = r.u32()?;
            let namespace = r.string()?;
            let name = r.string()?;
            let _replica_identity = r.u8()?;
            let n = r.u16()? as usize;
            let mut columns = Vec::with_capacity(n);
            let mut key = Vec::with_capacity(n);
            for _ in 0..n {
                let flags = r.u8()?;
                columns.push(r.string()?);
                let _type = r.u32()?;
                let _modifier = r.u32()?;
                key.push(flags & 1 == 1);
            }
            Message::Relation(Relation {
                id,
                // pgoutput names the pg_catalog schema as an empty string.
                namespace: if namespace.is_empty() {
                    "pg_catalog".into()
                } else {
                    namespace
                },
                name,
                columns,
                key,
            })
        }
        b'I' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'N' => Message::Insert {
                    relation,
                    new: r.tuple()?,
                },
                other => return Err(DecodeError(format!("insert tuple kind {other}"))),
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let mut old = None;
            let mut kind = r.u8()?;
            if kind == b'K' || kind == b'O' {
                old = Some(OldTuple {
                    full: kind == b'O',
                    values: r.tuple()?,
                });
                kind = r.u8()?;
            }
            if kind != b'N' {
                return Err(DecodeError(format!("update tuple kind {kind}")));
            }
            Message::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'K' | b'O' => Message::Delete {
                    relation,
                    old: r.tuple()?,
                },
                other => return Err(DecodeError(format!("delete tuple kind {other}"))),
            }
        }
        b'T' => {
            let n = r.u32()? as usize;
            let _options = r.u8()?;
            let mut relations = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                relations.push(r.u32()?);
            }
            Message::Truncate { relations }
        }
        other => Message::Other(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: &str) -> Vec<u8> {
        let mut out = vec![b't'];
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
        out
    }

    #[test]
    fn relation_and_changes() {
        let mut m = vec![b'R'];
        m.extend_from_slice(&16384u32.to_be_bytes());
        m.extend_from_slice(b"public\0orders\0");
        m.push(b'd');
        m.extend_from_slice(&2u16.to_be_bytes());
        m.push(1);
        m.extend_from_slice(b"id\0");
        m.extend_from_slice(&23u32.to_be_bytes());
        m.extend_from_slice(&(-1i32).to_be_bytes());
        m.push(0);
        m.extend_from_slice(b"note\0");
        m.extend_from_slice(&25u32.to_be_bytes());
        m.extend_from_slice(&(-1i32).to_be_bytes());
        let Message::Relation(r) = decode(Bytes::from(m)).unwrap() else {
            panic!("not a relation")
        };
        assert_eq!(
            (r.namespace.as_str(), r.name.as_str()),
            ("public", "orders")
        );
        assert_eq!(r.columns, vec!["id", "note"]);
        assert_eq!(r.key, vec![true, false]);

        let mut u = vec![b'U'];
        u.extend_from_slice(&16384u32.to_be_bytes());
        u.push(b'K');
        u.extend_from_slice(&2u16.to_be_bytes());
        u.extend_from_slice(&text("1"));
        u.push(b'n');
        u.push(b'N');
        u.extend_from_slice(&2u16.to_be_bytes());
        u.extend_from_slice(&text("2"));
        u.push(b'u');
        assert_eq!(
            decode(Bytes::from(u)).unwrap(),
            Message::Update {
                relation: 16384,
                old: Some(OldTuple {
                    full: false,
                    values: vec![Value::Text(Bytes::from("1")), Value::Null]
                }),
                new: vec![Value::Text(Bytes::from("2")), Value::Unchanged],
            }
        );
        let mut t = vec![b'T'];
        t.extend_from_slice(&1u32.to_be_bytes());
        t.push(0);
        t.extend_from_slice(&16384u32.to_be_bytes());
        assert_eq!(
            decode(Bytes::from(t)).unwrap(),
            Message::Truncate {
                relations: vec![16384]
            }
        );
        // Cut short anywhere: an error, never a panic.
        let mut full = vec![b'I'];
        full.extend_from_slice(&16384u32.to_be_bytes());
        full.push(b'N');
        full.extend_from_slice(&1u16.to_be_bytes());
        full.extend_from_slice(&text("42"));
        assert!(decode(Bytes::from(full.clone())).is_ok());
        for cut in 0..full.len() {
            assert!(decode(Bytes::from(full[..cut].to_vec())).is_err(), "{cut}");
        }
    }
}
