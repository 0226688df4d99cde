//! [`NexmarkGenerator`]: the Nexmark event stream (`../shared/bench/NEXMARK.md`), generated
//! column by column into Arrow batches.
//!
//! Event number `n` decides everything about its event: its kind (`n % 50`: 0 person, 1–3
//! auction, 4–49 bid), its time (`base + n × inter-event delay`) and its random values, which
//! come from a hash of (seed, n) rather than from a sequential generator. So a split can own any
//! share of the event numbers (split `i` of `k` owns `n ≡ i mod k`) and the union of the splits
//! is the same stream whatever `k` is.

use std::sync::Arc;

use datafusion::arrow::array::{
    Int64Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;

const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
const TOTAL_PROPORTION: u64 = 50;
const FIRST_PERSON_ID: i64 = 1000;
const FIRST_AUCTION_ID: i64 = 1000;
const HOT_RATIO_ROUND: i64 = 100;
const AUCTIONS_IN_FLIGHT: u64 = 100;
const AUCTION_ID_LEAD: u64 = 10;
const ACTIVE_PEOPLE: u64 = 1000;
const PERSON_ID_LEAD: u64 = 10;
const CHANNELS: [(&str, &str); 4] = [
    ("Google", "https://www.google.com/item.htm?query=1"),
    ("Facebook", "https://www.facebook.com/item.htm?query=1"),
    ("Baidu", "https://www.baidu.com/item.htm?query=1"),
    ("Apple", "https://www.apple.com/item.htm?query=1"),
];
/// Average size the `extra` column pads a bid to, in bytes.
const BID_AVERAGE_SIZE: usize = 100;
/// Average size the `extra` column pads a person to, in bytes.
const PERSON_AVERAGE_SIZE: u64 = 200;
/// Average size the `extra` column pads an auction to, in bytes.
const AUCTION_AVERAGE_SIZE: u64 = 500;
const FIRST_CATEGORY_ID: i64 = 10;
const CATEGORIES: u64 = 5;
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];

/// What kind of event an event number is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A new person.
    Person,
    /// A new auction.
    Auction,
    /// A bid on an auction.
    Bid,
}

/// The kind of event `n`.
pub fn event_kind(n: u64) -> EventKind {
    match n % TOTAL_PROPORTION {
        0 => EventKind::Person,
        1..=3 => EventKind::Auction,
        _ => EventKind::Bid,
    }
}

/// The 0-based id of the last person created at or before event `n`.
fn last_base0_person(n: u64) -> u64 {
    let epoch = n / TOTAL_PROPORTION;
    let offset = n % TOTAL_PROPORTION;
    if offset >= PERSON_PROPORTION {
        epoch * PERSON_PROPORTION + PERSON_PROPORTION - 1
    } else {
        // Event 0 of an epoch is that epoch's person.
        epoch * PERSON_PROPORTION
    }
}

/// The 0-based id of the last auction created at or before event `n`.
fn last_base0_auction(n: u64) -> u64 {
    let epoch = n / TOTAL_PROPORTION;
    let offset = n % TOTAL_PROPORTION;
    if offset < PERSON_PROPORTION {
        // Before this epoch's auctions: the previous epoch's last one.
        (epoch * AUCTION_PROPORTION).saturating_sub(1)
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        epoch * AUCTION_PROPORTION + AUCTION_PROPORTION - 1
    } else {
        epoch * AUCTION_PROPORTION + offset - PERSON_PROPORTION
    }
}

/// A stream of random numbers for one event: SplitMix64 over (seed, event number, draw).
struct EventRandom {
    state: u64,
}

impl EventRandom {
    fn new(seed: u64, n: u64) -> Self {
        Self {
            state: seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How to generate.
#[derive(Debug, Clone)]
pub struct NexmarkConfig {
    /// Events in the whole stream (all kinds, all splits); `None`: unbounded.
    pub event_num: Option<u64>,
    /// Events per second of event time: the spacing of `date_time`.
    pub event_rate: u64,
    /// Event time of event 0, nanoseconds since the Unix epoch.
    pub base_time: i64,
    /// Number of splits, and which one this generator is.
    pub split_num: u64,
    /// This generator's split, below `split_num`.
    pub split_index: u64,
    /// Seed of every random value.
    pub seed: u64,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        Self {
            event_num: None,
            event_rate: 10_000,
            // 2026-01-01 00:00:00 UTC
            base_time: 1_767_225_600_000_000_000,
            split_num: 1,
            split_index: 0,
            seed: 42,
        }
    }
}

/// The bid table's schema, as `CREATE TABLE bid (…)` in the Nexmark DDL.
pub fn bid_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("bidder", DataType::Int64, false),
        Field::new("price", DataType::Int64, false),
        Field::new("channel", DataType::Utf8, false),
        Field::new("url", DataType::Utf8, false),
        Field::new(
            "date_time",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            false,
        ),
        Field::new("extra", DataType::Utf8, false),
    ]))
}

/// The person table's schema.
pub fn person_schema() -> SchemaRef {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        text("name"),
        text("email_address"),
        text("credit_card"),
        text("city"),
        text("state"),
        Field::new(
            "date_time",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            false,
        ),
        text("extra"),
    ]))
}

/// The auction table's schema.
pub fn auction_schema() -> SchemaRef {
    let time =
        |name: &str| Field::new(name, DataType::Timestamp(TimeUnit::Nanosecond, None), false);
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("item_name", DataType::Utf8, false),
        Field::new("description", DataType::Utf8, false),
        Field::new("initial_bid", DataType::Int64, false),
        Field::new("reserve", DataType::Int64, false),
        time("date_time"),
        time("expires"),
        Field::new("seller", DataType::Int64, false),
        Field::new("category", DataType::Int64, false),
        Field::new("extra", DataType::Utf8, false),
    ]))
}

/// A price in cents: log-uniform from 1 to 1,000,000 dollars' worth of cents.
fn price(random: &mut EventRandom) -> i64 {
    // 10^(6u) as e^(6u·ln 10): `exp` costs half of what `powf` does.
    ((6.0 * std::f64::consts::LN_10 * random.unit()).exp() * 100.0).round() as i64
}

/// A person id for a bid or an auction's seller at event `n`: 75 % the hot person, else one
/// of the last 1,000 (or a few not created yet).
fn person_for(random: &mut EventRandom, n: u64) -> i64 {
    let last_person = last_base0_person(n);
    let id = if random.below(4) != 0 {
        (last_person as i64 / HOT_RATIO_ROUND) * HOT_RATIO_ROUND + 1
    } else {
        let people = last_person + 1;
        let active = people.min(ACTIVE_PEOPLE);
        (people - active + random.below(active + PERSON_ID_LEAD)) as i64
    };
    FIRST_PERSON_ID + id
}

/// Generates one split of the stream.
#[derive(Debug)]
pub struct NexmarkGenerator {
    config: NexmarkConfig,
    /// The next event number this split owns.
    next: u64,
    inter_event_nanos: i64,
    /// Random letters (and spaces) that text values are cut from: one copy per value instead
    /// of one random draw per character.
    letters: String,
}

/// Length of [`NexmarkGenerator::letters`].
const LETTERS: usize = 8192;

impl NexmarkGenerator {
    /// A generator at the start of its split.
    pub fn new(config: NexmarkConfig) -> Self {
        let inter_event_nanos = 1_000_000_000 / config.event_rate.max(1) as i64;
        let mut random = EventRandom::new(config.seed, u64::MAX);
        let letters = (0..LETTERS)
            .map(|_| match random.below(27) {
                26 => ' ',
                r => (b'a' + r as u8) as char,
            })
            .collect();
        Self {
            next: config.split_index,
            inter_event_nanos,
            letters,
            config,
        }
    }

    /// The next event number this split will generate: its position in the stream.
    pub fn next_event(&self) -> u64 {
        self.next
    }

    /// Continues from event number `next` (a position [`Self::next_event`] returned).
    pub fn resume_at(&mut self, next: u64) {
        self.next = next;
    }

    /// True when a bounded stream has no event left for this split.
    pub fn is_exhausted(&self) -> bool {
        self.config.event_num.is_some_and(|end| self.next >= end)
    }

    /// The next bids of this split: up to `max_rows` of them, fewer at the end of a bounded
    /// stream (an empty batch once it is exhausted).
    pub fn next_bids(&mut self, max_rows: usize) -> Result<RecordBatch, ArrowError> {
        let mut auction = Int64Builder::with_capacity(max_rows);
        let mut bidder = Int64Builder::with_capacity(max_rows);
        let mut price = Int64Builder::with_capacity(max_rows);
        // Sized for the average values (channel ~10, url ~60, extra ~40 bytes): growing a
        // buffer copies it.
        let mut channel = StringBuilder::with_capacity(max_rows, max_rows * 12);
        let mut url = StringBuilder::with_capacity(max_rows, max_rows * 72);
        let mut time = TimestampNanosecondBuilder::with_capacity(max_rows);
        let mut extra = StringBuilder::with_capacity(max_rows, max_rows * 48);
        let mut text = String::with_capacity(128);
        let mut rows = 0;
        while rows < max_rows && !self.is_exhausted() {
            let n = self.next;
            self.next += self.config.split_num;
            if event_kind(n) != EventKind::Bid {
                continue;
            }
            let mut random = EventRandom::new(self.config.seed, n);
            let last_auction = last_base0_auction(n);
            let auction_id = if random.below(2) == 0 {
                (last_auction as i64 / HOT_RATIO_ROUND) * HOT_RATIO_ROUND
            } else {
                let min = last_auction.saturating_sub(AUCTIONS_IN_FLIGHT);
                (min + random.below(last_auction - min + 1 + AUCTION_ID_LEAD)) as i64
            };
            auction.append_value(FIRST_AUCTION_ID + auction_id);
            bidder.append_value(person_for(&mut random, n));
            price.append_value(self::price(&mut random));
            if random.below(2) == 0 {
                let (name, link) = CHANNELS[random.below(CHANNELS.len() as u64) as usize];
                channel.append_value(name);
                url.append_value(link);
            } else {
                let id = random.below(10_000);
                text.clear();
                text.push_str("channel-");
                push_number(&mut text, id);
                channel.append_value(&text);
                text.clear();
                text.push_str("https://www.nexmark.com/");
                for part in 0..3 {
                    if part > 0 {
                        text.push('/');
                    }
                    push_letters(&mut random, &self.letters, &mut text, 5);
                }
                text.push_str("/item.htm?query=1");
                if random.below(10) != 0 {
                    text.push_str("&channel_id=");
                    push_number(&mut text, (id as u32).reverse_bits() as u64);
                }
                url.append_value(&text);
            }
            time.append_value(self.config.base_time + n as i64 * self.inter_event_nanos);
            // Pad to the average bid size: the fixed columns are about 60 bytes.
            let pad = random.below(2 * (BID_AVERAGE_SIZE as u64 - 60)) as usize;
            extra.append_value(letters_of(&mut random, &self.letters, pad));
            rows += 1;
        }
        RecordBatch::try_new(
            bid_schema(),
            vec![
                Arc::new(auction.finish()),
                Arc::new(bidder.finish()),
                Arc::new(price.finish()),
                Arc::new(channel.finish()),
                Arc::new(url.finish()),
                Arc::new(time.finish()),
                Arc::new(extra.finish()),
            ],
        )
    }
}

impl NexmarkGenerator {
    /// The next event numbers of `kind` this split owns, up to `max_rows` of them.
    fn events_of(&mut self, kind: EventKind, max_rows: usize) -> Vec<u64> {
        let mut events = Vec::with_capacity(max_rows);
        while events.len() < max_rows && !self.is_exhausted() {
            let n = self.next;
            self.next += self.config.split_num;
            if event_kind(n) == kind {
                events.push(n);
            }
        }
        events
    }

    fn time_of(&self, n: u64) -> i64 {
        self.config.base_time + n as i64 * self.inter_event_nanos
    }

    /// The next new people of this split, as [`Self::next_bids`] does bids.
    pub fn next_persons(&mut self, max_rows: usize) -> Result<RecordBatch, ArrowError> {
        let events = self.events_of(EventKind::Person, max_rows);
        let rows = events.len();
        let mut id = Int64Builder::with_capacity(rows);
        let mut name = StringBuilder::with_capacity(rows, rows * 12);
        let mut email = StringBuilder::with_capacity(rows, rows * 17);
        let mut card = StringBuilder::with_capacity(rows, rows * 19);
        let mut city = StringBuilder::with_capacity(rows, rows * 8);
        let mut state = StringBuilder::with_capacity(rows, rows * 2);
        let mut time = TimestampNanosecondBuilder::with_capacity(rows);
        let mut extra = StringBuilder::with_capacity(rows, rows * 140);
        let mut text = String::with_capacity(256);
        for n in events {
            let mut random = EventRandom::new(self.config.seed, n);
            id.append_value(FIRST_PERSON_ID + last_base0_person(n) as i64);
            text.clear();
            text.push_str(FIRST_NAMES[random.below(FIRST_NAMES.len() as u64) as usize]);
            text.push(' ');
            text.push_str(LAST_NAMES[random.below(LAST_NAMES.len() as u64) as usize]);
            name.append_value(&text);
            text.clear();
            push_letters(&mut random, &self.letters, &mut text, 7);
            text.push('@');
            push_letters(&mut random, &self.letters, &mut text, 5);
            text.push_str(".com");
            email.append_value(&text);
            text.clear();
            for group in 0..4 {
                if group > 0 {
                    text.push(' ');
                }
                use std::fmt::Write;
                let _ = write!(text, "{:04}", random.below(10_000));
            }
            card.append_value(&text);
            city.append_value(CITIES[random.below(CITIES.len() as u64) as usize]);
            state.append_value(STATES[random.below(STATES.len() as u64) as usize]);
            time.append_value(self.time_of(n));
            // The fixed columns are about 80 bytes.
            text.clear();
            let pad = random.below(2 * (PERSON_AVERAGE_SIZE - 80)) as usize;
            push_letters(&mut random, &self.letters, &mut text, pad);
            extra.append_value(&text);
        }
        RecordBatch::try_new(
            person_schema(),
            vec![
                Arc::new(id.finish()),
                Arc::new(name.finish()),
                Arc::new(email.finish()),
                Arc::new(card.finish()),
                Arc::new(city.finish()),
                Arc::new(state.finish()),
                Arc::new(time.finish()),
                Arc::new(extra.finish()),
            ],
        )
    }

    /// The next new auctions of this split, as [`Self::next_bids`] does bids.
    pub fn next_auctions(&mut self, max_rows: usize) -> Result<RecordBatch, ArrowError> {
        let events = self.events_of(EventKind::Auction, max_rows);
        let rows = events.len();
        let mut id = Int64Builder::with_capacity(rows);
        let mut item = StringBuilder::with_capacity(rows, rows * 12);
        let mut description = StringBuilder::with_capacity(rows, rows * 50);
        let mut initial = Int64Builder::with_capacity(rows);
        let mut reserve = Int64Builder::with_capacity(rows);
        let mut time = TimestampNanosecondBuilder::with_capacity(rows);
        let mut expires = TimestampNanosecondBuilder::with_capacity(rows);
        let mut seller = Int64Builder::with_capacity(rows);
        let mut category = Int64Builder::with_capacity(rows);
        let mut extra = StringBuilder::with_capacity(rows, rows * 350);
        let mut text = String::with_capacity(1024);
        // An auction lasts up to twice the time the next 100 auctions take to appear.
        let horizon = (AUCTIONS_IN_FLIGHT * TOTAL_PROPORTION / AUCTION_PROPORTION) as i64
            * self.inter_event_nanos;
        for n in events {
            let mut random = EventRandom::new(self.config.seed, n);
            id.append_value(FIRST_AUCTION_ID + last_base0_auction(n) as i64);
            text.clear();
            let len = 3 + random.below(18) as usize;
            push_letters(&mut random, &self.letters, &mut text, len);
            item.append_value(&text);
            text.clear();
            let len = 3 + random.below(98) as usize;
            push_letters(&mut random, &self.letters, &mut text, len);
            description.append_value(&text);
            let first_bid = price(&mut random);
            initial.append_value(first_bid);
            reserve.append_value(first_bid + price(&mut random));
            let at = self.time_of(n);
            time.append_value(at);
            expires.append_value(at + 1_000_000 + random.below(2 * horizon as u64) as i64);
            seller.append_value(person_for(&mut random, n));
            category.append_value(FIRST_CATEGORY_ID + random.below(CATEGORIES) as i64);
            // The fixed columns are about 150 bytes.
            text.clear();
            let pad = random.below(2 * (AUCTION_AVERAGE_SIZE - 150)) as usize;
            push_letters(&mut random, &self.letters, &mut text, pad);
            extra.append_value(&text);
        }
        RecordBatch::try_new(
            auction_schema(),
            vec![
                Arc::new(id.finish()),
                Arc::new(item.finish()),
                Arc::new(description.finish()),
                Arc::new(initial.finish()),
                Arc::new(reserve.finish()),
                Arc::new(time.finish()),
                Arc::new(expires.finish()),
                Arc::new(seller.finish()),
                Arc::new(category.finish()),
                Arc::new(extra.finish()),
            ],
        )
    }
}

/// `n` in decimal, without the formatting machinery (it is on every other bid's path).
fn push_number(text: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        text.push(d as char);
    }
}

/// `len` random letters (an occasional space), borrowed from `letters`.
fn letters_of<'a>(random: &mut EventRandom, letters: &'a str, len: usize) -> &'a str {
    let len = len.min(letters.len());
    let start = random.below((letters.len() - len + 1) as u64) as usize;
    &letters[start..start + len]
}

/// `len` random lowercase letters, an occasional space among them, cut from `letters`.
fn push_letters(random: &mut EventRandom, letters: &str, text: &mut String, len: usize) {
    text.push_str(letters_of(random, letters, len));
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Int64Type, TimestampNanosecondType};

    fn all_bids(config: NexmarkConfig) -> Vec<(i64, i64, i64, String, i64)> {
        let mut generator = NexmarkGenerator::new(config);
        let mut out = Vec::new();
        loop {
            let batch = generator.next_bids(777).unwrap();
            if batch.num_rows() == 0 {
                break;
            }
            let ints = |i: usize| batch.column(i).as_primitive::<Int64Type>().clone();
            let (a, b, p) = (ints(0), ints(1), ints(2));
            let url = batch.column(4).as_string::<i32>().clone();
            let t = batch
                .column(5)
                .as_primitive::<TimestampNanosecondType>()
                .clone();
            for r in 0..batch.num_rows() {
                out.push((
                    a.value(r),
                    b.value(r),
                    p.value(r),
                    url.value(r).to_string(),
                    t.value(r),
                ));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn splits_partition_the_same_stream() {
        let config = NexmarkConfig {
            event_num: Some(20_000),
            ..NexmarkConfig::default()
        };
        let whole = all_bids(config.clone());
        let mut union = Vec::new();
        for split_index in 0..3 {
            union.extend(all_bids(NexmarkConfig {
                split_num: 3,
                split_index,
                ..config.clone()
            }));
        }
        union.sort();
        // 46 of every 50 events are bids.
        assert_eq!(whole.len(), 20_000 / 50 * 46);
        assert_eq!(union, whole);
        // and the stream is the same on every run
        assert_eq!(all_bids(config), whole);
    }

    #[test]
    fn values_follow_the_spec() {
        let bids = all_bids(NexmarkConfig {
            event_num: Some(50_000),
            ..NexmarkConfig::default()
        });
        let max_auction = FIRST_AUCTION_ID + (50_000 / 50 * 3) as i64 + AUCTION_ID_LEAD as i64;
        assert!(
            bids.iter()
                .all(|b| (FIRST_AUCTION_ID..=max_auction).contains(&b.0))
        );
        assert!(bids.iter().all(|b| b.1 >= FIRST_PERSON_ID));
        assert!(bids.iter().all(|b| (1..=100_000_000).contains(&b.2)));
        let hot = bids
            .iter()
            .filter(|b| (b.0 - FIRST_AUCTION_ID) % 100 == 0)
            .count();
        // about half the bids go to a hot auction (plus the uniform ones that land on one)
        assert!(
            hot * 10 > bids.len() * 4 && hot * 10 < bids.len() * 6,
            "{hot}"
        );
        // 10,000 events per second of event time: 100 µs apart
        let first = bids.iter().map(|b| b.4).min().unwrap();
        assert_eq!(first, NexmarkConfig::default().base_time + 4 * 100_000);
        assert!(bids.iter().any(|b| b.3.contains("&channel_id=")));
    }

    #[test]
    fn persons_and_auctions_follow_the_spec() {
        let config = NexmarkConfig {
            event_num: Some(50_000),
            ..NexmarkConfig::default()
        };
        let mut generator = NexmarkGenerator::new(config.clone());
        let persons = generator.next_persons(100_000).unwrap();
        // 1 of every 50 events, ids sequential from 1000.
        assert_eq!(persons.num_rows(), 1000);
        let ids = persons.column(0).as_primitive::<Int64Type>();
        assert!((0..1000).all(|i| ids.value(i) == 1000 + i as i64));
        let states = persons.column(5).as_string::<i32>();
        assert!((0..1000).all(|i| STATES.contains(&states.value(i))));

        let mut one = NexmarkGenerator::new(config.clone());
        let auctions = one.next_auctions(100_000).unwrap();
        assert_eq!(auctions.num_rows(), 3000);
        let ids = auctions.column(0).as_primitive::<Int64Type>();
        assert!((0..3000).all(|i| ids.value(i) == 1000 + i as i64));
        let initial = auctions.column(3).as_primitive::<Int64Type>();
        let reserve = auctions.column(4).as_primitive::<Int64Type>();
        let time = auctions.column(5).as_primitive::<TimestampNanosecondType>();
        let expires = auctions.column(6).as_primitive::<TimestampNanosecondType>();
        let category = auctions.column(8).as_primitive::<Int64Type>();
        for i in 0..3000 {
            assert!(reserve.value(i) > initial.value(i));
            assert!(expires.value(i) > time.value(i));
            assert!((10..15).contains(&category.value(i)));
        }
        // Splits partition auctions too.
        let mut union = 0;
        for split_index in 0..2 {
            let mut g = NexmarkGenerator::new(NexmarkConfig {
                split_num: 2,
                split_index,
                ..config.clone()
            });
            union += g.next_auctions(100_000).unwrap().num_rows();
        }
        assert_eq!(union, 3000);
    }

    #[test]
    fn numbers_print_in_decimal() {
        for n in [0, 7, 10, 9_999, u64::MAX] {
            let mut text = String::new();
            push_number(&mut text, n);
            assert_eq!(text, n.to_string());
        }
    }

    #[test]
    fn ids_follow_the_event_numbers() {
        assert_eq!(event_kind(0), EventKind::Person);
        assert_eq!(event_kind(3), EventKind::Auction);
        assert_eq!(event_kind(4), EventKind::Bid);
        assert_eq!(last_base0_person(0), 0);
        assert_eq!(last_base0_person(49), 0);
        assert_eq!(last_base0_person(50), 1);
        assert_eq!(last_base0_auction(4), 2);
        assert_eq!(last_base0_auction(51), 3);
        assert_eq!(last_base0_auction(50), 2);
    }
}
