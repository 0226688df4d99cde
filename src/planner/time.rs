//! [`ColumnTime`]: the event-time role of a column, followed through a plan.

use datafusion::common::{DFSchema, ScalarValue};
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
        /// Window size in nanoseconds.
        size: i64,
        /// Whether over the watermarked time column.
        event_time: bool,
    },
}

fn literal_interval(expr: &Expr) -> Option<i64> {
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
                HOP_FUNCTION => match f.args.get(2).and_then(literal_interval) {
                    Some(size) => ColumnTime::HopList {
                        size,
                        event_time: on_event_time(f.args.first()),
                    },
                    None => ColumnTime::Plain,
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
                _ => ColumnTime::Plain,
            }
        }
        _ => {
            let _ = ScalarValue::Null;
            ColumnTime::Plain
        }
    }
}
