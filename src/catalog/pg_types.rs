//! PostgreSQL's types and how Arrow types look to a PostgreSQL client: the type OID announced in
//! a `RowDescription` and listed in `pg_attribute`, the name `format_type` prints, `typlen`, the
//! rows of `pg_type`, and the reverse mapping used for bound parameters.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};
use pgwire::api::Type;

/// The PostgreSQL type a column of Arrow type `dt` is sent as.
///
/// Scalars map to their natural PostgreSQL counterpart, `List`/`LargeList` of a scalar or a
/// struct map to the matching array type (`record[]` for structs), dictionaries to their value type, and anything without a
/// counterpart (maps, unions, nested lists, ...) to `text`, sent as Arrow's display
/// form.
pub fn pg_type(dt: &DataType) -> Type {
    match dt {
        DataType::List(field) | DataType::LargeList(field) => match field.data_type() {
            DataType::Struct(_) => Some(Type::RECORD),
            elem => scalar_pg_type(elem),
        }
        .and_then(|elem| array_of(&elem))
        .unwrap_or(Type::TEXT),
        DataType::Dictionary(_, value) => pg_type(value),
        // A row value: PostgreSQL's anonymous composite type.
        DataType::Struct(_) => Type::RECORD,
        other => scalar_pg_type(other).unwrap_or(Type::TEXT),
    }
}

/// The PostgreSQL type of a scalar Arrow type, or `None` for nested types and types that are
/// only sent as their Arrow display text.
pub(crate) fn scalar_pg_type(dt: &DataType) -> Option<Type> {
    let ty = match dt {
        // A column of nulls has no type of its own; PostgreSQL's `unknown` literals are sent
        // as text too.
        DataType::Null => Type::TEXT,
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Type::INT8,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Utf8 | DataType::Utf8View => Type::TEXT,
        // Sluice keeps `jsonb` as LargeUtf8 and uses that type for nothing else.
        DataType::LargeUtf8 => Type::JSONB,
        // Sluice's `uuid` (see `sql::uuid`).
        DataType::FixedSizeBinary(16) => Type::UUID,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => Type::BYTEA,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Time32(_) | DataType::Time64(_) => Type::TIME,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        // DataFusion yields durations for `timestamp - timestamp`; PostgreSQL yields interval.
        DataType::Interval(_) | DataType::Duration(_) => Type::INTERVAL,
        DataType::Decimal32(_, _)
        | DataType::Decimal64(_, _)
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => Type::NUMERIC,
        DataType::Dictionary(_, value) => return scalar_pg_type(value),
        _ => return None,
    };
    Some(ty)
}

/// Element types that have an array type we send, with that array type and its name.
const ARRAYS: [(Type, Type, &str); 16] = [
    (Type::BOOL, Type::BOOL_ARRAY, "boolean[]"),
    (Type::INT2, Type::INT2_ARRAY, "smallint[]"),
    (Type::INT4, Type::INT4_ARRAY, "integer[]"),
    (Type::INT8, Type::INT8_ARRAY, "bigint[]"),
    (Type::FLOAT4, Type::FLOAT4_ARRAY, "real[]"),
    (Type::FLOAT8, Type::FLOAT8_ARRAY, "double precision[]"),
    (Type::TEXT, Type::TEXT_ARRAY, "text[]"),
    (Type::BYTEA, Type::BYTEA_ARRAY, "bytea[]"),
    (Type::DATE, Type::DATE_ARRAY, "date[]"),
    (Type::TIME, Type::TIME_ARRAY, "time without time zone[]"),
    (
        Type::TIMESTAMP,
        Type::TIMESTAMP_ARRAY,
        "timestamp without time zone[]",
    ),
    (
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ_ARRAY,
        "timestamp with time zone[]",
    ),
    (Type::INTERVAL, Type::INTERVAL_ARRAY, "interval[]"),
    (Type::NUMERIC, Type::NUMERIC_ARRAY, "numeric[]"),
    (Type::RECORD, Type::RECORD_ARRAY, "record[]"),
    (Type::UUID, Type::UUID_ARRAY, "uuid[]"),
];

/// Array types a client may bind parameters as, beyond [`ARRAYS`], with their element type.
const EXTRA_PARAM_ARRAYS: [(Type, Type); 4] = [
    (Type::VARCHAR, Type::VARCHAR_ARRAY),
    (Type::BPCHAR, Type::BPCHAR_ARRAY),
    (Type::NAME, Type::NAME_ARRAY),
    (Type::OID, Type::OID_ARRAY),
];

/// The one-dimensional array type whose elements are `elem`, if we send such arrays.
pub fn array_of(elem: &Type) -> Option<Type> {
    ARRAYS
        .iter()
        .find(|(e, _, _)| e == elem)
        .map(|(_, array, _)| array.clone())
}

/// The element type of the array type `array`, or `None` if `array` is not an array type we
/// know.
pub fn array_element(array: &Type) -> Option<Type> {
    ARRAYS
        .iter()
        .find(|(_, a, _)| a == array)
        .map(|(elem, _, _)| elem.clone())
        .or_else(|| {
            EXTRA_PARAM_ARRAYS
                .iter()
                .find(|(_, a)| a == array)
                .map(|(elem, _)| elem.clone())
        })
}

/// The name PostgreSQL's `format_type` prints for the type a column of `dt` is sent as
/// (without a type modifier; see [`format_type`]).
pub fn pg_type_name(dt: &DataType) -> &'static str {
    static_type_name(&pg_type(dt)).unwrap_or("text")
}

/// The name PostgreSQL's `format_type` prints for `dt`, including the `numeric(p,s)`
/// modifier of decimals.
pub fn format_type(dt: &DataType) -> String {
    fn decimal(dt: &DataType) -> Option<(u8, i8)> {
        match dt {
            DataType::Decimal32(p, s)
            | DataType::Decimal64(p, s)
            | DataType::Decimal128(p, s)
            | DataType::Decimal256(p, s) => Some((*p, *s)),
            DataType::Dictionary(_, value) => decimal(value),
            _ => None,
        }
    }
    let (inner, suffix) = match dt {
        DataType::List(field) | DataType::LargeList(field) if pg_type(dt) != Type::TEXT => {
            (field.data_type(), "[]")
        }
        _ => (dt, ""),
    };
    match decimal(inner) {
        Some((p, s)) => format!("numeric({p},{s}){suffix}"),
        None => pg_type_name(dt).to_owned(),
    }
}

/// `pg_attribute.atttypmod` for a column of `dt`: the packed precision and scale of a
/// decimal, `-1` ("no modifier") for everything else.
pub fn type_modifier(dt: &DataType) -> i32 {
    match dt {
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => {
            // PostgreSQL packs the scale into 11 bits (it may be negative) and adds VARHDRSZ.
            ((i32::from(*p) << 16) | (i32::from(*s) & 0x7ff)) + 4
        }
        DataType::Dictionary(_, value) => type_modifier(value),
        _ => -1,
    }
}

/// `pg_type.typlen` of `t`: its fixed width in bytes, or `-1` for variable-width types.
pub fn type_len(t: &Type) -> i16 {
    match *t {
        Type::BOOL | Type::CHAR => 1,
        Type::INT2 => 2,
        Type::INT4 | Type::FLOAT4 | Type::DATE | Type::OID => 4,
        Type::INT8 | Type::FLOAT8 | Type::TIME | Type::TIMESTAMP | Type::TIMESTAMPTZ => 8,
        Type::INTERVAL | Type::UUID => 16,
        Type::NAME => 64,
        _ => -1,
    }
}

/// The `format_type` name of `t`, falling back to its catalog name (`t.name()`) for types
/// this module does not name itself.
pub fn type_display_name(t: &Type) -> &str {
    static_type_name(t).unwrap_or_else(|| t.name())
}

fn static_type_name(t: &Type) -> Option<&'static str> {
    let name = match *t {
        Type::BOOL => "boolean",
        Type::INT2 => "smallint",
        Type::INT4 => "integer",
        Type::INT8 => "bigint",
        Type::FLOAT4 => "real",
        Type::FLOAT8 => "double precision",
        Type::TEXT => "text",
        Type::VARCHAR => "character varying",
        Type::BPCHAR => "character",
        Type::CHAR => "\"char\"",
        Type::NAME => "name",
        Type::UNKNOWN => "unknown",
        Type::BYTEA => "bytea",
        Type::DATE => "date",
        Type::TIME => "time without time zone",
        Type::TIMESTAMP => "timestamp without time zone",
        Type::TIMESTAMPTZ => "timestamp with time zone",
        Type::INTERVAL => "interval",
        Type::NUMERIC => "numeric",
        Type::OID => "oid",
        Type::UUID => "uuid",
        Type::JSON => "json",
        Type::JSONB => "jsonb",
        Type::RECORD => "record",
        _ => {
            return ARRAYS
                .iter()
                .find(|(_, a, _)| a == t)
                .map(|(_, _, name)| *name);
        }
    };
    Some(name)
}

/// The Arrow type a bound parameter of PostgreSQL type `t` decodes to, or `None` for types
/// we do not know (their text form is passed on as `Utf8` for DataFusion to coerce).
pub fn arrow_type(t: &Type) -> Option<DataType> {
    let dt = match *t {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::CHAR | Type::NAME | Type::UNKNOWN => {
            DataType::Utf8
        }
        Type::UUID => crate::sql::uuid::UUID,
        Type::JSON | Type::JSONB => DataType::LargeUtf8,
        Type::BYTEA => DataType::Binary,
        Type::DATE => DataType::Date32,
        Type::TIME => DataType::Time64(TimeUnit::Microsecond),
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some(utc())),
        Type::INTERVAL => DataType::Interval(IntervalUnit::MonthDayNano),
        Type::NUMERIC => DataType::Decimal128(38, 10),
        Type::OID => DataType::UInt32,
        _ => {
            let elem = array_type_element_arrow(t)?;
            DataType::List(Arc::new(Field::new_list_field(elem, true)))
        }
    };
    Some(dt)
}

fn array_type_element_arrow(t: &Type) -> Option<DataType> {
    arrow_type(&array_element(t)?)
}

/// The time zone given to `timestamptz` parameters: we run in UTC.
pub(crate) fn utc() -> Arc<str> {
    Arc::from("+00:00")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(dt: DataType) -> DataType {
        DataType::List(Arc::new(Field::new_list_field(dt, true)))
    }

    #[test]
    fn scalars_map_to_their_postgres_types() {
        let cases = [
            (DataType::Boolean, Type::BOOL, "boolean"),
            (DataType::Int8, Type::INT2, "smallint"),
            (DataType::UInt8, Type::INT2, "smallint"),
            (DataType::Int16, Type::INT2, "smallint"),
            (DataType::UInt16, Type::INT4, "integer"),
            (DataType::Int32, Type::INT4, "integer"),
            (DataType::UInt32, Type::INT8, "bigint"),
            (DataType::Int64, Type::INT8, "bigint"),
            (DataType::UInt64, Type::INT8, "bigint"),
            (DataType::Float16, Type::FLOAT4, "real"),
            (DataType::Float32, Type::FLOAT4, "real"),
            (DataType::Float64, Type::FLOAT8, "double precision"),
            (DataType::Utf8, Type::TEXT, "text"),
            (DataType::LargeUtf8, Type::JSONB, "jsonb"),
            (DataType::Utf8View, Type::TEXT, "text"),
            (DataType::Binary, Type::BYTEA, "bytea"),
            (DataType::FixedSizeBinary(8), Type::BYTEA, "bytea"),
            (DataType::FixedSizeBinary(16), Type::UUID, "uuid"),
            (DataType::Date32, Type::DATE, "date"),
            (DataType::Date64, Type::DATE, "date"),
            (
                DataType::Time64(TimeUnit::Nanosecond),
                Type::TIME,
                "time without time zone",
            ),
            (
                DataType::Timestamp(TimeUnit::Second, None),
                Type::TIMESTAMP,
                "timestamp without time zone",
            ),
            (
                DataType::Timestamp(TimeUnit::Nanosecond, Some("+02:00".into())),
                Type::TIMESTAMPTZ,
                "timestamp with time zone",
            ),
            (
                DataType::Interval(IntervalUnit::DayTime),
                Type::INTERVAL,
                "interval",
            ),
            (DataType::Decimal128(10, 2), Type::NUMERIC, "numeric"),
            (DataType::Decimal256(60, 5), Type::NUMERIC, "numeric"),
            (DataType::Null, Type::TEXT, "text"),
            (
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                Type::TEXT,
                "text",
            ),
            (
                DataType::Struct(vec![Field::new("a", DataType::Int32, true)].into()),
                Type::RECORD,
                "record",
            ),
        ];
        for (dt, ty, name) in cases {
            assert_eq!(pg_type(&dt), ty, "{dt}");
            assert_eq!(pg_type_name(&dt), name, "{dt}");
        }
    }

    #[test]
    fn lists_of_scalars_are_arrays() {
        assert_eq!(pg_type(&list(DataType::Int32)), Type::INT4_ARRAY);
        assert_eq!(pg_type(&list(DataType::Utf8)), Type::TEXT_ARRAY);
        assert_eq!(
            pg_type(&DataType::LargeList(Arc::new(Field::new_list_field(
                DataType::Float64,
                true
            )))),
            Type::FLOAT8_ARRAY
        );
        assert_eq!(pg_type_name(&list(DataType::Int64)), "bigint[]");
        // Nested lists have no one-dimensional array type.
        assert_eq!(pg_type(&list(list(DataType::Int32))), Type::TEXT);
    }

    #[test]
    fn format_type_prints_decimal_modifiers() {
        assert_eq!(format_type(&DataType::Decimal128(10, 2)), "numeric(10,2)");
        assert_eq!(
            format_type(&list(DataType::Decimal128(5, 1))),
            "numeric(5,1)[]"
        );
        assert_eq!(format_type(&DataType::Int32), "integer");
        assert_eq!(
            type_modifier(&DataType::Decimal128(10, 2)),
            (10 << 16 | 2) + 4
        );
        assert_eq!(type_modifier(&DataType::Utf8), -1);
    }

    #[test]
    fn type_lengths() {
        assert_eq!(type_len(&Type::BOOL), 1);
        assert_eq!(type_len(&Type::INT2), 2);
        assert_eq!(type_len(&Type::INT4), 4);
        assert_eq!(type_len(&Type::INT8), 8);
        assert_eq!(type_len(&Type::FLOAT4), 4);
        assert_eq!(type_len(&Type::FLOAT8), 8);
        assert_eq!(type_len(&Type::DATE), 4);
        assert_eq!(type_len(&Type::TIME), 8);
        assert_eq!(type_len(&Type::TIMESTAMPTZ), 8);
        assert_eq!(type_len(&Type::INTERVAL), 16);
        assert_eq!(type_len(&Type::TEXT), -1);
        assert_eq!(type_len(&Type::NUMERIC), -1);
        assert_eq!(type_len(&Type::INT4_ARRAY), -1);
    }

    #[test]
    fn parameter_types_map_back_to_arrow() {
        assert_eq!(arrow_type(&Type::INT2), Some(DataType::Int16));
        assert_eq!(arrow_type(&Type::INT4), Some(DataType::Int32));
        assert_eq!(arrow_type(&Type::INT8), Some(DataType::Int64));
        assert_eq!(arrow_type(&Type::FLOAT4), Some(DataType::Float32));
        assert_eq!(arrow_type(&Type::FLOAT8), Some(DataType::Float64));
        assert_eq!(arrow_type(&Type::BOOL), Some(DataType::Boolean));
        for t in [
            Type::TEXT,
            Type::VARCHAR,
            Type::BPCHAR,
            Type::NAME,
            Type::UNKNOWN,
        ] {
            assert_eq!(arrow_type(&t), Some(DataType::Utf8));
        }
        assert_eq!(arrow_type(&Type::BYTEA), Some(DataType::Binary));
        assert_eq!(arrow_type(&Type::UUID), Some(DataType::FixedSizeBinary(16)));
        assert_eq!(arrow_type(&Type::DATE), Some(DataType::Date32));
        assert_eq!(
            arrow_type(&Type::TIMESTAMP),
            Some(DataType::Timestamp(TimeUnit::Microsecond, None))
        );
        assert_eq!(
            arrow_type(&Type::TIMESTAMPTZ),
            Some(DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("+00:00".into())
            ))
        );
        assert_eq!(
            arrow_type(&Type::NUMERIC),
            Some(DataType::Decimal128(38, 10))
        );
        assert_eq!(arrow_type(&Type::OID), Some(DataType::UInt32));
        assert_eq!(arrow_type(&Type::INT4_ARRAY), Some(list(DataType::Int32)));
        assert_eq!(arrow_type(&Type::VARCHAR_ARRAY), Some(list(DataType::Utf8)));
        assert_eq!(arrow_type(&Type::POINT), None);
    }

    #[test]
    fn display_names() {
        assert_eq!(type_display_name(&Type::INT4), "integer");
        assert_eq!(type_display_name(&Type::TEXT_ARRAY), "text[]");
        assert_eq!(type_display_name(&Type::POINT), "point");
    }
}

/// The types listed in `pg_type`, with their `typcategory`.
pub const CATALOG_TYPES: &[(Type, &str)] = &[
    (Type::BOOL, "B"),
    (Type::BYTEA, "U"),
    (Type::CHAR, "Z"),
    (Type::NAME, "S"),
    (Type::INT8, "N"),
    (Type::INT2, "N"),
    (Type::INT4, "N"),
    (Type::TEXT, "S"),
    (Type::OID, "N"),
    (Type::JSON, "U"),
    (Type::FLOAT4, "N"),
    (Type::FLOAT8, "N"),
    (Type::UNKNOWN, "X"),
    (Type::BPCHAR, "S"),
    (Type::VARCHAR, "S"),
    (Type::DATE, "D"),
    (Type::TIME, "D"),
    (Type::TIMESTAMP, "D"),
    (Type::TIMESTAMPTZ, "D"),
    (Type::INTERVAL, "T"),
    (Type::NUMERIC, "N"),
    (Type::REGCLASS, "N"),
    (Type::UUID, "U"),
    (Type::JSONB, "U"),
    (Type::BOOL_ARRAY, "A"),
    (Type::BYTEA_ARRAY, "A"),
    (Type::INT2_ARRAY, "A"),
    (Type::INT4_ARRAY, "A"),
    (Type::INT8_ARRAY, "A"),
    (Type::TEXT_ARRAY, "A"),
    (Type::VARCHAR_ARRAY, "A"),
    (Type::FLOAT4_ARRAY, "A"),
    (Type::FLOAT8_ARRAY, "A"),
    (Type::DATE_ARRAY, "A"),
    (Type::TIMESTAMP_ARRAY, "A"),
    (Type::TIMESTAMPTZ_ARRAY, "A"),
    (Type::NUMERIC_ARRAY, "A"),
];

/// The catalog type named `name` (`int4`, `integer`, `pg_catalog.text` …), for `'…'::regtype`.
pub fn type_by_name(name: &str) -> Option<Type> {
    let name = name.strip_prefix("pg_catalog.").unwrap_or(name);
    let name = name.trim_matches('"').to_ascii_lowercase();
    CATALOG_TYPES
        .iter()
        .map(|(t, _)| t)
        .find(|t| t.name() == name || type_display_name(t) == name)
        .cloned()
}

/// What `format_type(oid, typmod)` prints, or `None` for an OID we do not know.
pub fn format_type_oid(oid: u32, typmod: i32) -> Option<String> {
    let t = Type::from_oid(oid)?;
    if t == Type::NUMERIC && typmod >= 4 {
        let m = typmod - 4;
        return Some(format!("numeric({},{})", m >> 16, m & 0x7ff));
    }
    if (t == Type::VARCHAR || t == Type::BPCHAR) && typmod >= 4 {
        return Some(format!("{}({})", type_display_name(&t), typmod - 4));
    }
    Some(type_display_name(&t).to_string())
}

#[cfg(test)]
mod catalog_tests {
    use super::*;
    use datafusion::arrow::datatypes::TimeUnit;

    #[test]
    fn format_type_of_columns_prints_postgres_names() {
        let name = |dt: &DataType| format_type_oid(pg_type(dt).oid(), type_modifier(dt)).unwrap();
        assert_eq!(name(&DataType::Int32), "integer");
        assert_eq!(
            name(&DataType::Timestamp(TimeUnit::Nanosecond, None)),
            "timestamp without time zone"
        );
        assert_eq!(name(&DataType::Decimal128(10, 2)), "numeric(10,2)");
        assert_eq!(type_by_name("pg_catalog.int4"), Some(Type::INT4));
        assert_eq!(type_by_name("integer"), Some(Type::INT4));
    }
}
