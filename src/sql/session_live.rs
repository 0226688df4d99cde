//! The session's side of live statements: `SUBSCRIBE`, and cursors (`DECLARE`, `FETCH`,
//! `CLOSE`) over a query or a subscription.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::sql::sqlparser::ast::Statement;

use crate::error::{Error, Result, sqlstate};

use super::cursor::Cursor;
use super::feed::{LiveFeed, feed_schema};
use super::live::{CursorBody, LiveStatement, Subscribe, SubscribeTarget};
use super::parser::SluiceStatement;
use super::session::{Outcome, Session};

impl Session {
    /// Runs a live statement.
    pub(super) async fn execute_live(
        &mut self,
        statement: &SluiceStatement,
        live: &LiveStatement,
    ) -> Result<Outcome> {
        match live {
            LiveStatement::Subscribe(subscribe) => Ok(Outcome::Subscribe {
                feed: self.subscribe(subscribe).await?,
                copy: None,
            }),
            LiveStatement::CopySubscribe { subscribe, csv } => Ok(Outcome::Subscribe {
                feed: self.subscribe(subscribe).await?,
                copy: Some(*csv),
            }),
            LiveStatement::Declare { name, body } => {
                if !self.in_transaction {
                    return Err(Error::user(
                        sqlstate::NO_ACTIVE_SQL_TRANSACTION,
                        "DECLARE CURSOR can only be used in transaction blocks",
                    ));
                }
                if self.cursors.contains_key(name) {
                    return Err(Error::user(
                        sqlstate::DUPLICATE_CURSOR,
                        format!("cursor \"{name}\" already exists"),
                    ));
                }
                let cursor = match body {
                    CursorBody::Subscribe(subscribe) => {
                        Cursor::feed(self.subscribe(subscribe).await?)
                    }
                    CursorBody::Query(query) => {
                        let query_statement = SluiceStatement {
                            statement: query.as_ref().clone(),
                            live: None,
                            ..statement.clone()
                        };
                        match self.run_datafusion(&query_statement, None).await? {
                            Outcome::Rows { schema, stream } => Cursor::query(schema, stream),
                            _ => return Err(Error::unsupported("a cursor over this statement")),
                        }
                    }
                };
                self.cursors.insert(name.clone(), cursor);
                Ok(Outcome::Command {
                    tag: "DECLARE CURSOR".into(),
                    rows: None,
                })
            }
            LiveStatement::Fetch {
                name,
                count,
                timeout,
            } => {
                let max_rows = self.engine().config().max_result_rows;
                let cursor = self.cursors.get_mut(name).ok_or_else(|| no_cursor(name))?;
                let rows = cursor.fetch(*count, *timeout, max_rows).await?;
                let schema = Arc::clone(cursor.schema());
                let stream = MemoryStream::try_new(rows, Arc::clone(&schema), None)?;
                Ok(Outcome::Rows {
                    schema,
                    stream: Box::pin(stream),
                })
            }
            LiveStatement::Close { name } => {
                match name {
                    Some(name) => {
                        self.cursors.remove(name).ok_or_else(|| no_cursor(name))?;
                    }
                    None => self.cursors.clear(),
                }
                Ok(Outcome::Command {
                    tag: "CLOSE CURSOR".into(),
                    rows: None,
                })
            }
        }
    }

    /// The rows' schema of a live statement (for `Describe`), without running it.
    pub(super) async fn describe_live(
        &self,
        statement: &SluiceStatement,
        live: &LiveStatement,
    ) -> Result<Option<SchemaRef>> {
        match live {
            LiveStatement::Subscribe(subscribe) => {
                let schema = self.target_schema(statement, &subscribe.target).await?;
                Ok(Some(feed_schema(&schema, subscribe.options.progress)))
            }
            LiveStatement::Fetch { name, .. } => Ok(Some(Arc::clone(
                self.cursors
                    .get(name)
                    .ok_or_else(|| no_cursor(name))?
                    .schema(),
            ))),
            _ => Ok(None),
        }
    }

    async fn subscribe(&self, subscribe: &Subscribe) -> Result<LiveFeed> {
        let (schema, subscription) = self
            .engine()
            .subscribe(&self.state(), &subscribe.target, &subscribe.options)
            .await?;
        Ok(LiveFeed::new(
            subscription,
            &schema,
            subscribe.options.progress,
        ))
    }

    async fn target_schema(
        &self,
        statement: &SluiceStatement,
        target: &SubscribeTarget,
    ) -> Result<SchemaRef> {
        match target {
            SubscribeTarget::Relation(name) => {
                if let Some(view) = self.engine().views().get(name) {
                    return Ok(Arc::clone(&view.schema));
                }
                match self.engine().tables().get(name) {
                    Some(table) => Ok(Arc::clone(&table.def().schema)),
                    None => Err(Error::user(
                        sqlstate::UNDEFINED_TABLE,
                        format!("relation \"{name}\" does not exist"),
                    )),
                }
            }
            SubscribeTarget::Query(query) => {
                let query_statement = SluiceStatement {
                    statement: Statement::Query(query.clone()),
                    live: None,
                    ..statement.clone()
                };
                let plan = self.plan(&query_statement).await?;
                Ok(Arc::clone(plan.schema().inner()))
            }
        }
    }
}

fn no_cursor(name: &str) -> Error {
    Error::user(
        sqlstate::INVALID_CURSOR_NAME,
        format!("cursor \"{name}\" does not exist"),
    )
}
