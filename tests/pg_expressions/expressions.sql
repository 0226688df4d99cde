-- Expressions run as `SELECT <expression>` in Sluice and in the machine's PostgreSQL; their
-- text, type and SQLSTATE must agree (tests/pg_expressions.rs). One per line.
-- integers
1
-1
2147483647
2147483648
-2147483648
9223372036854775807
1 + 1
7 / 2
-7 / 2
7 % 3
-7 % 3
7 / 0
7 % 0
2 ^ 10
2147483647 + 1
9223372036854775807 + 1
abs(-5)
5 & 3
5 | 3
5 # 3
~5
1 << 4
256 >> 2
gcd(12, 18)
lcm(4, 6)
div(7, 2)
mod(-7, 3)
factorial(5)
(3)::smallint + 1
32767::smallint + 1::smallint
'42'::int
' 42 '::int
'4x'::int
'3.7'::int
3.7::int
3.5::int
-3.5::int
2.5::int
'2147483648'::int
'9223372036854775808'::bigint
-- numeric
0.1 + 0.2
1.0 / 3
10.0 / 4
1 / 3.0
0.908 * 14909
2.50 * 2
1.5e3
1.5e300::float8
round(2.5)
round(-2.5)
round(2.567, 2)
round(2.567::numeric, 1)
trunc(2.567, 2)
ceil(2.1)
floor(-2.1)
sign(-3.2)
sqrt(2::numeric)
12.345::numeric(5, 2)
123.456::numeric(4, 1)
'NaN'::numeric
'1e-5'::numeric
0.00001
100::numeric / 3
numeric '1.10' + numeric '2.205'
1.10 * 2.205
power(2, 0.5)
exp(1.0)
ln(10)
log(100)
log(2, 8)
scale(1.2300)
-- floats
0.1::float8 + 0.2::float8
1e300::float8 * 1e10::float8
'Infinity'::float8
'-Infinity'::float8
'NaN'::float8
1.0::float8 / 3
1::real / 3
3.14159::real
1e-7::float8
123456789012345678::float8
0.5::float8
-0.0::float8
'1.5e-310'::float8
cbrt(27::float8)
pi()
degrees(pi())
sin(0)
atan2(1, 1)
power(2::float8, 10::float8)
10::float8 / 0
-- casts and text forms
true
false
't'::boolean
'yes'::boolean
'off'::boolean
'maybe'::boolean
true AND NULL
false AND NULL
true OR NULL
NOT NULL::boolean
NULL::int IS NULL
1 IS DISTINCT FROM NULL
NULL = NULL
1::text
1.50::text
true::text
'abc'::varchar(2)
'abc'::char(5)
'abc'::char(5) || 'x'
length('abc'::char(5))
12::text || 'a'
CAST(12.5 AS int)
CAST('2026-01-02' AS date)
'2026-02-30'::date
'2026-01-02 03:04:05'::timestamp
'2026-01-02 03:04:05.123456789'::timestamp
'2026-01-02 03:04:05+02'::timestamptz
'2026-01-02T03:04:05Z'::timestamptz
'03:04:05'::time
'24:00:00'::time
'1 day'::interval
'1 day 02:03:04'::interval
'02:03:04'::interval
'1 year 2 months'::interval
'-1 day'::interval
'1.5 days'::interval
'90 minutes'::interval
'P1DT2H'::interval
'@ 1 hour ago'::interval
interval '1' day
interval '2' hour
interval '1 day' * 3
interval '1 hour' * 1.5
interval '1 day' / 2
interval '1 day' + interval '1 hour'
interval '25 hours'
interval '36 hours' - interval '1 day'
'\x00ff'::bytea
'abc'::bytea
'a\\b'::bytea
E'a\\nb'
E'tab\there'
'it''s'
$$dollar$$
U&'\0041'
'{1,2,3}'::int[]
'{}'::int[]
ARRAY[1, 2, 3]
ARRAY['a', NULL, 'b c']
ARRAY[1.5, 2]
ARRAY[ARRAY[1, 2], ARRAY[3, 4]]
ARRAY[]::text[]
ARRAY[1, 2] || 3
ARRAY[1, 2] || ARRAY[3]
array_length(ARRAY[1, 2, 3], 1)
cardinality(ARRAY[1, 2, 3])
(ARRAY[1, 2, 3])[2]
(ARRAY[1, 2, 3])[5]
array_position(ARRAY['a', 'b'], 'b')
array_to_string(ARRAY[1, NULL, 3], ',')
array_to_string(ARRAY[1, NULL, 3], ',', '*')
string_to_array('a,b,c', ',')
3 = ANY(ARRAY[1, 2, 3])
3 = ALL(ARRAY[1, 2, 3])
array_remove(ARRAY[1, 2, 1], 1)
array_cat(ARRAY[1], ARRAY[2, 3])
array_append(ARRAY[1], 2)
array_prepend(0, ARRAY[1])
-- strings
'abc' || 'def'
'abc' || NULL
concat('a', NULL, 'b')
concat_ws('-', 'a', NULL, 'b')
length('héllo')
char_length('abc')
octet_length('héllo')
bit_length('abc')
upper('abc')
lower('ABC')
initcap('hello wORLD')
substring('hello' from 2 for 3)
substring('hello', 2)
substring('hello', 0, 3)
substr('hello', 2, 2)
left('hello', 2)
right('hello', 2)
left('hello', -2)
position('l' in 'hello')
strpos('hello', 'lo')
replace('hello', 'l', 'L')
translate('hello', 'el', 'ip')
trim('  a  ')
trim(both 'x' from 'xxaxx')
ltrim('  a')
rtrim('a  ')
btrim('xyaxy', 'xy')
lpad('7', 3, '0')
rpad('ab', 5, '-')
lpad('hello', 3)
repeat('ab', 3)
reverse('abc')
split_part('a/b/c', '/', 2)
split_part('a/b/c', '/', 5)
split_part('a/b/c', '/', -1)
starts_with('hello', 'he')
'hello' LIKE 'h%'
'hello' LIKE 'H%'
'hello' ILIKE 'H%'
'a_c' LIKE 'a\_c'
'hello' SIMILAR TO 'h(e|a)llo'
'hello' ~ '^h.*o$'
'hello' ~* '^H'
'hello' !~ 'x'
regexp_replace('hello world', 'o', '0')
regexp_replace('hello world', 'o', '0', 'g')
regexp_match('foobarbequebaz', 'ba.')
regexp_match('abc', '(a)(x)?')
(regexp_match('channel_id=42&x', '(&|^)channel_id=([^&]*)'))[2]
regexp_like('abc', 'B', 'i')
md5('abc')
encode('abc'::bytea, 'hex')
encode('abc'::bytea, 'base64')
decode('616263', 'hex')
ascii('A')
chr(65)
to_hex(255)
quote_ident('a b')
quote_literal('it''s')
format('%s-%s', 'a', 1)
format('%I', 'A b')
'abc' < 'abd'
'a' < 'B'
'abc' = 'abc '
overlay('hello' placing 'XX' from 2 for 3)
-- dates and times
DATE '2026-01-31' + 1
DATE '2026-03-01' - DATE '2026-02-01'
DATE '2026-01-31' + INTERVAL '1 month'
TIMESTAMP '2026-01-31 10:00:00' + INTERVAL '1 month'
TIMESTAMP '2026-01-01 00:00:00' - TIMESTAMP '2025-12-30 12:00:00'
TIMESTAMP '2026-01-01 10:00:00' - INTERVAL '90 minutes'
DATE '2026-01-01' + TIME '10:30'
extract(year FROM TIMESTAMP '2026-07-04 10:11:12.5')
extract(month FROM DATE '2026-07-04')
extract(dow FROM DATE '2026-07-04')
extract(isodow FROM DATE '2026-07-05')
extract(doy FROM DATE '2026-07-04')
extract(week FROM DATE '2026-01-01')
extract(quarter FROM DATE '2026-07-04')
extract(epoch FROM TIMESTAMP '2026-01-01 00:00:01')
extract(second FROM TIMESTAMP '2026-07-04 10:11:12.5')
extract(millisecond FROM TIMESTAMP '2026-07-04 10:11:12.5')
extract(hour FROM INTERVAL '1 day 3 hours')
extract(day FROM INTERVAL '40 days')
extract(epoch FROM INTERVAL '1 day')
date_part('hour', TIMESTAMP '2026-07-04 10:11:12')
date_trunc('month', TIMESTAMP '2026-07-04 10:11:12')
date_trunc('week', TIMESTAMP '2026-07-04 10:11:12')
date_trunc('hour', TIMESTAMP '2026-07-04 10:11:12')
date_trunc('quarter', DATE '2026-08-04')
date_trunc('day', TIMESTAMPTZ '2026-07-04 10:11:12+00')
date_bin(INTERVAL '15 minutes', TIMESTAMP '2026-07-04 10:11:12', TIMESTAMP '2026-01-01')
to_char(TIMESTAMP '2026-07-04 15:06:07', 'YYYY-MM-DD')
to_char(TIMESTAMP '2026-07-04 15:06:07', 'HH:MI')
to_char(TIMESTAMP '2026-07-04 15:06:07', 'HH24:MI:SS')
to_char(TIMESTAMP '2026-07-04 15:06:07', 'Day, DD Month YYYY')
to_char(TIMESTAMP '2026-07-04 15:06:07', 'FMDay FMMonth')
to_char(TIMESTAMP '2026-07-04 15:06:07', 'Mon DY AM')
to_char(TIMESTAMP '2026-07-04 15:06:07.123456', 'MS US')
to_char(TIMESTAMP '2026-07-04 15:06:07', 'YYYY"-W"IW')
to_char(TIMESTAMP '2026-07-04 15:06:07', 'Q DDD J')
to_char(1234.5, '9999.99')
to_char(1234.5, 'FM9,999.00')
to_char(42, '000')
to_date('2026-07-04', 'YYYY-MM-DD')
to_timestamp('2026-07-04 10:11', 'YYYY-MM-DD HH24:MI')
to_timestamp(0)
make_date(2026, 7, 4)
make_timestamp(2026, 7, 4, 10, 11, 12.5)
make_interval(days => 3)
age(TIMESTAMP '2026-07-04', TIMESTAMP '2025-01-01')
justify_hours(INTERVAL '27 hours')
justify_days(INTERVAL '35 days')
isfinite(DATE '2026-01-01')
TIMESTAMP '2026-01-01' < TIMESTAMP '2026-01-02'
DATE '2026-01-01' = TIMESTAMP '2026-01-01 00:00:00'
TIMESTAMPTZ '2026-01-01 00:00:00+02' AT TIME ZONE 'UTC'
TIMESTAMP '2026-01-01 00:00:00' AT TIME ZONE 'America/New_York'
'2026-01-01'::date::timestamp
'2026-01-01 10:00'::timestamp::date
'2026-01-01 10:00:00.5'::timestamp::time
-- conditionals and comparison
CASE WHEN 1 > 0 THEN 'a' ELSE 'b' END
CASE 2 WHEN 1 THEN 'one' WHEN 2 THEN 'two' END
CASE WHEN false THEN 1 END
coalesce(NULL, 2, 3)
coalesce(NULL::int, NULL)
nullif(1, 1)
nullif(1, 2)
greatest(1, 3, 2)
least('b', 'a', NULL)
greatest(1, NULL)
1 BETWEEN 0 AND 2
2 BETWEEN SYMMETRIC 3 AND 1
1 IN (1, 2, NULL)
3 IN (1, 2, NULL)
3 NOT IN (1, 2)
(1, 2) = (1, 2)
(1, 2) < (1, 3)
1 = 1.0
'1' = 1
1.0 = 1::float8
NULL::int + 1
num_nulls(1, NULL, NULL)
num_nonnulls(1, NULL)
-- misc
pg_typeof(1)
pg_typeof(1.5)
pg_typeof(1 + 1)
pg_typeof(1::smallint + 1)
pg_typeof('a')
pg_typeof(now())
pg_typeof(7 / 2)
pg_typeof(1.0 / 3)
pg_typeof(2 ^ 2)
pg_typeof(ARRAY[1])
pg_typeof(sum(1))
pg_typeof(avg(1))
pg_typeof(count(*))
current_schema()
version() LIKE 'PostgreSQL%'
'abc'::name
1::oid
'pg_class'::regclass::oid > 0
gen_random_uuid() IS NOT NULL
'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid
'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'::uuid
'{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}'::uuid
'a0eebc999c0b4ef8bb6d6bb9bd380a11'::uuid::text
'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid < 'b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid
'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid = 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'
'x-' || 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid
gen_random_uuid()::text ~ '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab]'
'{"a": 1}'::json
'{"b":1, "a": [1,2]}'::jsonb
'{"a": {"b": 2}}'::jsonb -> 'a'
'{"a": {"b": 2}}'::jsonb ->> 'a'
'{"a": {"b": 2}}'::jsonb #>> '{a,b}'
'{"a": 1, "b": 2}'::jsonb @> '{"a": 1}'
'{"a": 1}'::jsonb ? 'a'
jsonb_typeof('[1]'::jsonb)
jsonb_array_length('[1, 2]'::jsonb)
jsonb_build_object('a', 1, 'b', 'x')
'[1, 2]'::jsonb -> 1
row(1, 'a')
'[1e2, 1.50, -0, 2E-3, "a\tb"]'::jsonb
'{"a": 1}'::jsonb || '{"b": [2]}'
'[1, 2, 3]'::jsonb - -1
'{"a": 1, "b": 2}'::jsonb - 'a'
'{"a": {"b": [1, 2]}}'::jsonb #> '{a,b,0}'
'["x", "y"]'::jsonb ?| ARRAY['y', 'z']
to_jsonb(ARRAY[1, 2])
jsonb_strip_nulls('{"a": null, "b": 1}')
('3.5'::jsonb)::int
'[[1, 2], 3]'::jsonb @> '[[2]]'
row(1, 'a b', NULL, 'q"x', '')
row(true, 2.5, row(3, 'x'))
to_jsonb(0.1::real)
'{"a": 1}'::jsonb || '[2]'::jsonb
('0.5'::jsonb)::int
jsonb_set('{"a": 1, "b": [1, 2]}', '{b,-9}', '0')
jsonb_set('{"a": {"b": 1}}', '{a,c}', '[2]', true)
jsonb_set('1', '{a}', '2')
jsonb_set('[1]', '{x}', '2')
'{"a": 1, "b": 2, "c": 3}'::jsonb - ARRAY['a', 'c']
'{"a": 1, "b": [1, 2, 3]}'::jsonb #- '{b,-1}'
'{"a": {"b": 1, "c": 2}}'::jsonb #- ARRAY['a', 'b']
'1'::jsonb #- '{a}'
