-- Run in Sluice: psql -h 127.0.0.1 -p 5433 -U sluice -d sluice -f pipeline.sql
-- Two PostgreSQL tables mirrored by CDC, a join with an aggregate over them, and its result
-- written back into PostgreSQL (shop.revenue_by_country, created by the sink).
CREATE SOURCE shop WITH (
  connector = 'postgres-cdc', hostname = '127.0.0.1', port = '5432',
  username = 'postgres', database.name = 'test'
);
CREATE TABLE customers (id INT PRIMARY KEY, name TEXT, country TEXT)
  FROM shop TABLE 'shop.customers';
CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id INT, amount NUMERIC(10, 2),
                     placed_at TIMESTAMPTZ)
  FROM shop TABLE 'shop.orders';
CREATE MATERIALIZED VIEW revenue_by_country AS
  SELECT c.country, count(*) AS orders, sum(o.amount) AS revenue
  FROM orders o JOIN customers c ON o.customer_id = c.id
  GROUP BY c.country;
CREATE SINK revenue_out FROM revenue_by_country WITH (
  connector = 'postgres', hostname = '127.0.0.1', port = '5432',
  username = 'postgres', database.name = 'test',
  schema.name = 'shop', table.name = 'revenue_by_country', primary_key = 'country'
);
