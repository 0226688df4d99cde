//! Where rows come from and go to: the internal queue behind `CREATE TABLE` (`queue/`) and the
//! Nexmark generator (`nexmark/`, not yet a SQL source). Kafka and files join them here.

pub mod nexmark;
pub mod queue;
