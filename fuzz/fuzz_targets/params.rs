//! The decoders of bound parameters (`Bind`), text and binary, for every type a driver sends:
//! a bad value is an error, never a panic. The first byte picks the type and format.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pgwire::api::Type;
use pgwire::api::results::FieldFormat;
use sluice::serve::params::decode_param;

const TYPES: &[Type] = &[
    Type::BOOL,
    Type::INT2,
    Type::INT4,
    Type::INT8,
    Type::FLOAT4,
    Type::FLOAT8,
    Type::NUMERIC,
    Type::TEXT,
    Type::VARCHAR,
    Type::BPCHAR,
    Type::BYTEA,
    Type::DATE,
    Type::TIME,
    Type::TIMESTAMP,
    Type::TIMESTAMPTZ,
    Type::INTERVAL,
    Type::UUID,
    Type::JSON,
    Type::JSONB,
    Type::OID,
    Type::INT4_ARRAY,
    Type::INT8_ARRAY,
    Type::TEXT_ARRAY,
    Type::FLOAT8_ARRAY,
    Type::UNKNOWN,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, value)) = data.split_first() else {
        return;
    };
    let ty = &TYPES[usize::from(pick >> 1) % TYPES.len()];
    let format = if pick & 1 == 0 {
        FieldFormat::Text
    } else {
        FieldFormat::Binary
    };
    let _ = decode_param(Some(value), ty, format);
});
