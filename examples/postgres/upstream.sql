-- Run in PostgreSQL (needs wal_level = logical): psql -h 127.0.0.1 -U postgres -d test -f upstream.sql
CREATE SCHEMA IF NOT EXISTS shop;
CREATE TABLE IF NOT EXISTS shop.customers (id INT PRIMARY KEY, name TEXT, country TEXT);
CREATE TABLE IF NOT EXISTS shop.orders (
  id BIGINT PRIMARY KEY,
  customer_id INT,
  amount NUMERIC(10, 2),
  placed_at TIMESTAMPTZ DEFAULT now()
);
INSERT INTO shop.customers VALUES (1, 'Ada', 'UK'), (2, 'Grace', 'US'), (3, 'Linus', 'FI')
  ON CONFLICT DO NOTHING;
INSERT INTO shop.orders (id, customer_id, amount) VALUES
  (1, 1, 19.90), (2, 2, 5.00), (3, 2, 42.50), (4, 3, 7.25)
  ON CONFLICT DO NOTHING;
