//! PostgreSQL's built-in types as `pg_type` lists them, and which one stands for each Arrow type.

use datafusion::arrow::datatypes::DataType;

/// One row of `pg_type`.
#[derive(Debug, Clone, Copy)]
pub struct PgType {
    /// `oid`.
    pub oid: u32,
    /// `typname`.
    pub name: &'static str,
    /// The name `format_type` prints.
    pub display: &'static str,
    /// `typlen`: bytes, or -1 for variable length.
    pub len: i16,
    /// `typcategory`.
    pub category: &'static str,
    /// `typelem`: the element type of an array type, else 0.
    pub elem: u32,
    /// `typarray`: the array type of this type, else 0.
    pub array: u32,
}

const fn t(
    oid: u32,
    name: &'static str,
    display: &'static str,
    len: i16,
    category: &'static str,
    elem: u32,
    array: u32,
) -> PgType {
    PgType {
        oid,
        name,
        display,
        len,
        category,
        elem,
        array,
    }
}

/// The types Sluice knows, with PostgreSQL's OIDs.
pub const PG_TYPES: &[PgType] = &[
    t(16, "bool", "boolean", 1, "B", 0, 1000),
    t(17, "bytea", "bytea", -1, "U", 0, 1001),
    t(18, "char", "\"char\"", 1, "Z", 0, 1002),
    t(19, "name", "name", 64, "S", 0, 1003),
    t(20, "int8", "bigint", 8, "N", 0, 1016),
    t(21, "int2", "smallint", 2, "N", 0, 1005),
    t(23, "int4", "integer", 4, "N", 0, 1007),
    t(25, "text", "text", -1, "S", 0, 1009),
    t(26, "oid", "oid", 4, "N", 0, 1028),
    t(114, "json", "json", -1, "U", 0, 199),
    t(700, "float4", "real", 4, "N", 0, 1021),
    t(701, "float8", "double precision", 8, "N", 0, 1022),
    t(705, "unknown", "unknown", -2, "X", 0, 0),
    t(1042, "bpchar", "character", -1, "S", 0, 1014),
    t(1043, "varchar", "character varying", -1, "S", 0, 1015),
    t(1082, "date", "date", 4, "D", 0, 1182),
    t(1083, "time", "time without time zone", 8, "D", 0, 1183),
    t(
        1114,
        "timestamp",
        "timestamp without time zone",
        8,
        "D",
        0,
        1115,
    ),
    t(
        1184,
        "timestamptz",
        "timestamp with time zone",
        8,
        "D",
        0,
        1185,
    ),
    t(1186, "interval", "interval", 16, "T", 0, 1187),
    t(1700, "numeric", "numeric", -1, "N", 0, 1231),
    t(2205, "regclass", "regclass", 4, "N", 0, 2210),
    t(2950, "uuid", "uuid", 16, "U", 0, 2951),
    t(3802, "jsonb", "jsonb", -1, "U", 0, 3807),
    t(1000, "_bool", "boolean[]", -1, "A", 16, 0),
    t(1001, "_bytea", "bytea[]", -1, "A", 17, 0),
    t(1005, "_int2", "smallint[]", -1, "A", 21, 0),
    t(1007, "_int4", "integer[]", -1, "A", 23, 0),
    t(1009, "_text", "text[]", -1, "A", 25, 0),
    t(1015, "_varchar", "character varying[]", -1, "A", 1043, 0),
    t(1016, "_int8", "bigint[]", -1, "A", 20, 0),
    t(1021, "_float4", "real[]", -1, "A", 700, 0),
    t(1022, "_float8", "double precision[]", -1, "A", 701, 0),
    t(
        1115,
        "_timestamp",
        "timestamp without time zone[]",
        -1,
        "A",
        1114,
        0,
    ),
    t(1182, "_date", "date[]", -1, "A", 1082, 0),
    t(
        1185,
        "_timestamptz",
        "timestamp with time zone[]",
        -1,
        "A",
        1184,
        0,
    ),
    t(1231, "_numeric", "numeric[]", -1, "A", 1700, 0),
];

/// The `pg_type` row of an OID.
pub fn by_oid(oid: u32) -> Option<&'static PgType> {
    PG_TYPES.iter().find(|t| t.oid == oid)
}

/// The `pg_type` row of a type name (`int4`, `integer`, `pg_catalog.text` …).
pub fn by_name(name: &str) -> Option<&'static PgType> {
    let name = name.strip_prefix("pg_catalog.").unwrap_or(name);
    let name = name.trim_matches('"').to_ascii_lowercase();
    let alias = match name.as_str() {
        "int" | "integer" => "int4",
        "smallint" => "int2",
        "bigint" => "int8",
        "real" => "float4",
        "double precision" | "float" => "float8",
        "boolean" => "bool",
        "decimal" => "numeric",
        "character varying" => "varchar",
        other => other,
    };
    PG_TYPES
        .iter()
        .find(|t| t.name == alias || t.display == alias)
}

/// The PostgreSQL type OID that stands for an Arrow type.
pub fn pg_type_oid(dt: &DataType) -> u32 {
    match dt {
        DataType::Boolean => 16,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => 21,
        DataType::Int32 | DataType::UInt16 => 23,
        DataType::Int64 | DataType::UInt64 => 20,
        DataType::UInt32 => 26,
        DataType::Float16 | DataType::Float32 => 700,
        DataType::Float64 => 701,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => 25,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => 17,
        DataType::Date32 | DataType::Date64 => 1082,
        DataType::Time32(_) | DataType::Time64(_) => 1083,
        DataType::Timestamp(_, None) => 1114,
        DataType::Timestamp(_, Some(_)) => 1184,
        DataType::Interval(_) | DataType::Duration(_) => 1186,
        DataType::Decimal32(_, _)
        | DataType::Decimal64(_, _)
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => 1700,
        DataType::Dictionary(_, value) => pg_type_oid(value),
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _) => {
            let elem = pg_type_oid(f.data_type());
            by_oid(elem)
                .map(|t| t.array)
                .filter(|&a| a != 0)
                .unwrap_or(1009)
        }
        _ => 25,
    }
}

/// `atttypmod` of an Arrow type: numeric precision and scale, else -1.
pub fn type_modifier(dt: &DataType) -> i32 {
    match dt {
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
            ((i32::from(*p) << 16) | (i32::from(*s) & 0xffff)) + 4
        }
        _ => -1,
    }
}

/// `typlen` of a type OID.
pub fn type_len(oid: u32) -> i16 {
    by_oid(oid).map(|t| t.len).unwrap_or(-1)
}

/// What `format_type(oid, typmod)` prints.
pub fn format_type(oid: u32, typmod: i32) -> Option<String> {
    let t = by_oid(oid)?;
    if oid == 1700 && typmod >= 4 {
        let m = typmod - 4;
        return Some(format!("numeric({},{})", m >> 16, m & 0xffff));
    }
    if (oid == 1043 || oid == 1042) && typmod >= 4 {
        return Some(format!("{}({})", t.display, typmod - 4));
    }
    Some(t.display.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::TimeUnit;

    #[test]
    fn arrow_types_map_to_postgres_types() {
        assert_eq!(
            format_type(pg_type_oid(&DataType::Int32), -1).unwrap(),
            "integer"
        );
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, None);
        assert_eq!(
            format_type(pg_type_oid(&ts), -1).unwrap(),
            "timestamp without time zone"
        );
        let dec = DataType::Decimal128(10, 2);
        assert_eq!(
            format_type(pg_type_oid(&dec), type_modifier(&dec)).unwrap(),
            "numeric(10,2)"
        );
        assert_eq!(by_name("pg_catalog.int4").unwrap().oid, 23);
        assert_eq!(by_name("integer").unwrap().oid, 23);
    }
}
