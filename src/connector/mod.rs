//! Where rows come from and go to. For now: the internal queue behind `CREATE TABLE`
//! (`queue/`). Kafka, files and the nexmark generator join it here.

pub mod queue;
