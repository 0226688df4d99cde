//! [`ColumnTime`]: the event-time role of a column, followed through a plan.

use datafusion::common::DFSchema;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

use crate::sql::windows::{HOP_FUNCTION, TUMBLE_FUNCTION, interval_nanos};

/// What a column says about event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnTime {
    /// Nothing.
    Plain,
    /// A table's time column, the one its watermark is on.
    EventTime,
    /// A window bound: the window ends at the value + `end_offset` (the size for a window
    /// start, 0 for an end). `event_time`: computed from an [`ColumnTime::EventTime`] column, so
    /// the watermark closes it.
    Window {
        /// Offset from the value to the window's end, in nanoseconds.
        end_offset: i64,
        /// Whether the window is over the watermarked time column.
        event_time: bool,
    },
    /// The list of hopping window starts of a row (before `unnest`).
    HopList {
        /// Window slide in nanoseconds.
        slide: i64,
        /// Window size in nanoseconds.
        size: i64,
        /// Whether over the watermarked time column.
        event_time: bool,
    },
    /// With slicing: the start of the row's slice (of width gcd(slide, size)) in place of its
    /// windows; the column's value for window `w` is `w + offset`.
    Slice {
        /// Window slide in nanoseconds.
        slide: i64,
        /// Window size in nanoseconds.
        size: i64,
        /// Offset of this column from the window start (0 for the start, size for the end).
        offset: i64,
    },
}

pub(super) fn literal_interval(expr: &Expr) -> Option<i64> {
    match expr {
        Expr::Literal(value, _) => interval_nanos(value).ok(),
        Expr::Alias(a) => literal_interval(&a.expr),
        _ => None,
    }
}

/// The event-time role of `expr` over an input whose columns have roles `inputs`.
pub fn expr_time(expr: &Expr, inputs: &[ColumnTime], schema: &DFSchema) -> ColumnTime {
    match expr {
        Expr::Alias(alias) => expr_time(&alias.expr, inputs, schema),
        Expr::Column(column) => schema
            .index_of_column(column)
            .ok()
            .and_then(|i| inputs.get(i).copied())
            .unwrap_or(ColumnTime::Plain),
        Expr::ScalarFunction(f) => {
            let on_event_time = |arg: Option<&Expr>| {
                arg.is_some_and(|a| expr_time(a, inputs, schema) == ColumnTime::EventTime)
            };
            match f.func.name() {
                TUMBLE_FUNCTION => match f.args.get(1).and_then(literal_interval) {
                    Some(size) => ColumnTime::Window {
                        end_offset: size,
                        event_time: on_event_time(f.args.first()),
                    },
                    None => ColumnTime::Plain,
                },
                HOP_FUNCTION => match (
                    f.args.get(1).and_then(literal_interval),
                    f.args.get(2).and_then(literal_interval),
                ) {
                    (Some(slide), Some(size)) => ColumnTime::HopList {
                        slide,
                        size,
                        event_time: on_event_time(f.args.first()),
                    },
                    _ => ColumnTime::Plain,
                },
                _ => ColumnTime::Plain,
            }
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            match (expr_time(left, inputs, schema), op, literal_interval(right)) {
                (
                    ColumnTime::Window {
                        end_offset,
                        event_time,
                    },
                    Operator::Plus,
                    Some(d),
                ) => ColumnTime::Window {
                    end_offset: end_offset - d,
                    event_time,
                },
                (
                    ColumnTime::Slice {
                        slide,
                        size,
                        offset,
                    },
                    Operator::Plus,
                    Some(d),
                ) => ColumnTime::Slice {
                    slide,
                    size,
                    offset: offset + d,
                },
                _ => ColumnTime::Plain,
            }
        }
        _ => ColumnTime::Plain,
    }
}

/// Whether `expr` reads a column holding slice starts (whose values are not yet windows).
pub fn reads_slice(expr: &Expr, inputs: &[ColumnTime], schema: &DFSchema) -> bool {
    expr.column_refs().iter().any(|c| {
        schema
            .index_of_column(c)
            .ok()
            .and_then(|i| inputs.get(i))
            .is_some_and(|t| matches!(t, ColumnTime::Slice { .. }))
    })
}
