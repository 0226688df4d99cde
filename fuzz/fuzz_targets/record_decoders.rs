//! The source record decoders (JSON, CSV, Avro in the Confluent frame with an inline schema) on
//! arbitrary records: bad records are reported, never a panic. The first byte picks the
//! decoder; the rest is split into records at 0xFF bytes, and also decoded as lines.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use sluice::connector::decode::RecordDecoder;
use sluice::connector::spec::{AvroSchemaSource, Encode};

const AVRO_SCHEMA: &str = r#"{"type":"record","name":"bid","fields":[
  {"name":"auction","type":"long"},{"name":"price","type":["null","long"]},
  {"name":"channel","type":"string"},{"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
  {"name":"ok","type":"boolean"},{"name":"score","type":"double"}]}"#;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let schema = Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, true),
        Field::new("price", DataType::Int64, true),
        Field::new("channel", DataType::Utf8, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("ok", DataType::Boolean, true),
        Field::new("score", DataType::Float64, true),
    ]));
    let encode = match pick % 4 {
        0 => Encode::Json,
        1 => Encode::Csv {
            delimiter: b',',
            header: false,
        },
        2 => Encode::Csv {
            delimiter: b'|',
            header: true,
        },
        _ => Encode::Avro {
            schema: AvroSchemaSource::Inline(AVRO_SCHEMA.to_string()),
        },
    };
    let Ok(mut decoder) = RecordDecoder::new(schema, encode) else {
        return;
    };
    let records: Vec<&[u8]> = rest.split(|&b| b == 0xFF).collect();
    if let Ok(decoded) = decoder.decode(&records) {
        assert!(decoded.batch.num_rows() <= records.len() || pick % 4 == 0);
    }
    let _ = decoder.decode_lines(rest);
});
