//! The SQL dialect Sluice parses: sqlparser's PostgreSQL dialect, plus RisingWave's struct type
//! `STRUCT<a INT, b VARCHAR>` (sqlparser reads it for BigQuery and the generic dialect only).
//!
//! Every method PostgreSQL's dialect overrides is handed to it, and [`Dialect::dialect`] answers
//! PostgreSQL's, so each place sqlparser asks "is this PostgreSQL?" still says yes.

use std::any::TypeId;

use datafusion::sql::sqlparser::dialect::{Dialect, PostgreSqlDialect, Precedence};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};

/// PostgreSQL's dialect with struct types and literals.
#[derive(Debug, Default, Clone, Copy)]
pub struct SluiceDialect;

impl Dialect for SluiceDialect {
    fn dialect(&self) -> TypeId {
        TypeId::of::<PostgreSqlDialect>()
    }

    /// `STRUCT<a INT, b VARCHAR>` as a column type, and `STRUCT(1 AS a, 'x' AS b)` as a value.
    fn supports_struct_literal(&self) -> bool {
        true
    }

    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        PostgreSqlDialect {}.identifier_quote_style(identifier)
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        PostgreSqlDialect {}.is_delimited_identifier_start(ch)
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        PostgreSqlDialect {}.is_identifier_start(ch)
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        PostgreSqlDialect {}.is_identifier_part(ch)
    }

    fn supports_unicode_string_literal(&self) -> bool {
        PostgreSqlDialect {}.supports_unicode_string_literal()
    }

    fn is_reserved_for_identifier(&self, kw: Keyword) -> bool {
        PostgreSqlDialect {}.is_reserved_for_identifier(kw)
    }

    fn is_custom_operator_part(&self, ch: char) -> bool {
        PostgreSqlDialect {}.is_custom_operator_part(ch)
    }

    fn get_next_precedence(&self, parser: &Parser) -> Option<Result<u8, ParserError>> {
        PostgreSqlDialect {}.get_next_precedence(parser)
    }

    fn supports_filter_during_aggregation(&self) -> bool {
        PostgreSqlDialect {}.supports_filter_during_aggregation()
    }

    fn supports_group_by_expr(&self) -> bool {
        PostgreSqlDialect {}.supports_group_by_expr()
    }

    fn prec_value(&self, prec: Precedence) -> u8 {
        PostgreSqlDialect {}.prec_value(prec)
    }

    fn allow_extract_custom(&self) -> bool {
        PostgreSqlDialect {}.allow_extract_custom()
    }

    fn allow_extract_single_quotes(&self) -> bool {
        PostgreSqlDialect {}.allow_extract_single_quotes()
    }

    fn supports_create_index_with_clause(&self) -> bool {
        PostgreSqlDialect {}.supports_create_index_with_clause()
    }

    fn supports_explain_with_utility_options(&self) -> bool {
        PostgreSqlDialect {}.supports_explain_with_utility_options()
    }

    fn supports_listen_notify(&self) -> bool {
        PostgreSqlDialect {}.supports_listen_notify()
    }

    fn supports_factorial_operator(&self) -> bool {
        PostgreSqlDialect {}.supports_factorial_operator()
    }

    fn supports_bitwise_shift_operators(&self) -> bool {
        PostgreSqlDialect {}.supports_bitwise_shift_operators()
    }

    fn supports_comment_on(&self) -> bool {
        PostgreSqlDialect {}.supports_comment_on()
    }

    fn supports_load_extension(&self) -> bool {
        PostgreSqlDialect {}.supports_load_extension()
    }

    fn supports_named_fn_args_with_colon_operator(&self) -> bool {
        PostgreSqlDialect {}.supports_named_fn_args_with_colon_operator()
    }

    fn supports_named_fn_args_with_expr_name(&self) -> bool {
        PostgreSqlDialect {}.supports_named_fn_args_with_expr_name()
    }

    fn supports_empty_projections(&self) -> bool {
        PostgreSqlDialect {}.supports_empty_projections()
    }

    fn supports_nested_comments(&self) -> bool {
        PostgreSqlDialect {}.supports_nested_comments()
    }

    fn supports_string_escape_constant(&self) -> bool {
        PostgreSqlDialect {}.supports_string_escape_constant()
    }

    fn supports_numeric_literal_underscores(&self) -> bool {
        PostgreSqlDialect {}.supports_numeric_literal_underscores()
    }

    fn supports_array_typedef_with_brackets(&self) -> bool {
        PostgreSqlDialect {}.supports_array_typedef_with_brackets()
    }

    fn supports_geometric_types(&self) -> bool {
        PostgreSqlDialect {}.supports_geometric_types()
    }

    fn supports_set_names(&self) -> bool {
        PostgreSqlDialect {}.supports_set_names()
    }

    fn supports_alter_column_type_using(&self) -> bool {
        PostgreSqlDialect {}.supports_alter_column_type_using()
    }

    fn supports_notnull_operator(&self) -> bool {
        PostgreSqlDialect {}.supports_notnull_operator()
    }

    fn supports_interval_options(&self) -> bool {
        PostgreSqlDialect {}.supports_interval_options()
    }

    fn supports_insert_table_alias(&self) -> bool {
        PostgreSqlDialect {}.supports_insert_table_alias()
    }

    fn supports_create_table_like_parenthesized(&self) -> bool {
        PostgreSqlDialect {}.supports_create_table_like_parenthesized()
    }

    fn supports_select_wildcard_with_alias(&self) -> bool {
        PostgreSqlDialect {}.supports_select_wildcard_with_alias()
    }

    fn supports_comma_separated_trim(&self) -> bool {
        PostgreSqlDialect {}.supports_comma_separated_trim()
    }

    fn supports_xml_expressions(&self) -> bool {
        PostgreSqlDialect {}.supports_xml_expressions()
    }

    fn supports_comment_optimizer_hint(&self) -> bool {
        PostgreSqlDialect {}.supports_comment_optimizer_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statements that lean on what PostgreSQL's dialect does differently from the default:
    /// each parses to the same tree under ours.
    #[test]
    fn parses_postgresql_as_postgresql_does() {
        let statements = [
            "SELECT a::int, $$x$$, E'a\\nb', U&'d\\0061t', x ~ 'a', a @> b, a #- '{a}', a ->> 'k'",
            "SELECT 5 !, x << 2, 1_000, a ISNULL, b NOTNULL, a || b || c, -2 ^ 2 * 3",
            "SELECT extract('year' FROM ts), trim(both 'x' FROM s), INTERVAL '1' DAY, ARRAY[1, 2][1]",
            "SELECT count(*) FILTER (WHERE a > 1), \"Quoted\", f(a => 1) FROM t GROUP BY ROLLUP (a)",
            "SELECT /* a /* nested */ comment */ 1 OPERATOR(pg_catalog.+) 2",
            "COMMENT ON TABLE t IS 'x'",
            "LISTEN c",
            "CREATE INDEX i ON t (a) WITH (fillfactor = 70)",
            "EXPLAIN (ANALYZE, VERBOSE) SELECT 1",
            "INSERT INTO t AS x VALUES (1)",
            "CREATE TABLE t (a INT[], b NUMERIC(10, 2), c CHARACTER VARYING(3))",
        ];
        for sql in statements {
            let ours = Parser::parse_sql(&SluiceDialect, sql);
            let theirs = Parser::parse_sql(&PostgreSqlDialect {}, sql);
            assert_eq!(format!("{ours:?}"), format!("{theirs:?}"), "{sql}");
            assert!(ours.is_ok(), "{sql}: {ours:?}");
        }
    }

    #[test]
    fn parses_struct_types() {
        let sql = "CREATE TABLE t (a STRUCT<x INT, y STRUCT<z VARCHAR>>, b INT)";
        assert!(Parser::parse_sql(&PostgreSqlDialect {}, sql).is_err());
        let parsed = Parser::parse_sql(&SluiceDialect, sql).expect("parses");
        assert_eq!(parsed[0].to_string(), sql);
    }
}
