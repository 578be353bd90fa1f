//! The `wasm` benchmark's workloads: deterministic streams of `cart` and `bank` events.

use loom_ledger::{Event, StoredEvent};

/// A tiny deterministic PRNG (xorshift64*), so every run sees the same events.
pub(super) struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub(super) const PRODUCTS: [(&str, &str, i64); 12] = [
    ("SKU-10017", "Organic Fuji apples, 1 kg", 349),
    ("SKU-10042", "Sourdough loaf", 425),
    ("SKU-10077", "Whole milk, 1 l", 119),
    ("SKU-10103", "Free-range eggs, 10", 389),
    ("SKU-10150", "Dark roast coffee beans, 500 g", 1149),
    ("SKU-10166", "Greek yoghurt, 500 g", 279),
    ("SKU-10201", "Basmati rice, 2 kg", 599),
    ("SKU-10244", "Extra virgin olive oil, 750 ml", 899),
    ("SKU-10289", "Cherry tomatoes, 250 g", 249),
    ("SKU-10302", "Aged cheddar, 200 g", 459),
    ("SKU-10318", "Dishwasher tablets, 40", 1299),
    ("SKU-10355", "Sparkling water, 6 × 1.5 l", 329),
];

/// Stored events the way the ledger hands them to the runtime: CloudEvents attributes,
/// producer `time`, JSON data, no extensions.
pub(super) struct Stream {
    subject: String,
    pub(super) events: Vec<StoredEvent>,
}

impl Stream {
    fn new(subject: String) -> Stream {
        Stream {
            subject,
            events: Vec::new(),
        }
    }

    fn push(&mut self, position: u64, ty: &str, data: serde_json::Value) {
        let revision = self.events.len() as u64 + 1;
        let mut event = Event::new(
            "https://shop.example/web",
            format!("7d3f9a2c-5b1e-4c8a-9f00-{position:012x}"),
            ty,
            self.subject.clone(),
            data,
        );
        let seconds = position;
        event.time = Some(format!(
            "2025-03-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            1 + (seconds / 86_400) % 28,
            (seconds / 3600) % 24,
            (seconds / 60) % 60,
            seconds % 60,
            position % 1000
        ));
        self.events.push(StoredEvent {
            position,
            revision,
            recorded_micros: 1_740_787_200_000_000 + position as i64 * 1_000,
            event,
        });
    }
}

pub(super) fn item_added(rng: &mut Rng, products: &[(&str, &str, i64)]) -> serde_json::Value {
    let (sku, name, price) = products[rng.below(products.len() as u64) as usize];
    serde_json::json!({
        "sku": sku,
        "name": name,
        "price": price,
        "quantity": 1 + rng.below(4),
    })
}

/// One long cart stream with a bounded state (≤ 12 lines).
pub(super) fn cart_stream(n: usize) -> Stream {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut s = Stream::new("cart/0b6f6b8e-3a55-4c1d-a7a4-6d1f2c9e8b10".into());
    s.push(1, "was_created", serde_json::json!({}));
    for i in 1..n {
        let position = i as u64 + 1;
        if rng.below(100) < 80 {
            s.push(position, "had_item_added", item_added(&mut rng, &PRODUCTS));
        } else {
            let (sku, _, _) = PRODUCTS[rng.below(PRODUCTS.len() as u64) as usize];
            s.push(
                position,
                "had_item_removed",
                serde_json::json!({ "sku": sku }),
            );
        }
    }
    s
}

/// Many carts of 20 events each: created, 15 adds over 8 products, 3 removes, checked out.
pub(super) fn cart_lifecycles(n: usize) -> Vec<Stream> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut position = 0u64;
    let mut next = || {
        position += 1;
        position
    };
    (0..n.div_ceil(20))
        .map(|c| {
            let mut s = Stream::new(format!("cart/4a1e9c70-0d2b-4f63-b1f5-{c:012x}"));
            let start = rng.below(PRODUCTS.len() as u64 - 8) as usize;
            let products = &PRODUCTS[start..start + 8];
            s.push(next(), "was_created", serde_json::json!({}));
            for _ in 0..15 {
                s.push(next(), "had_item_added", item_added(&mut rng, products));
            }
            for _ in 0..3 {
                let (sku, _, _) = products[rng.below(8) as usize];
                s.push(
                    next(),
                    "had_item_removed",
                    serde_json::json!({ "sku": sku }),
                );
            }
            s.push(next(), "was_checked_out", serde_json::json!({}));
            s
        })
        .collect()
}

/// What a `bank` stream's credits and debits carry.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum BankData {
    /// `{"amount"}` alone.
    Small,
    /// The ~256 bytes of the peers benchmark's events (W5b), of which `bank` reads only
    /// `amount`: the guest's cost of reading past the rest.
    Peers,
}

/// One account stream: opened, then credits and debits.
pub(super) fn bank_stream(n: usize, data: BankData) -> Stream {
    let mut rng = Rng(0xd1b5_4a32_d192_ed03);
    let mut s = Stream::new("account/DE89-3704-0044-0532-0130-00".into());
    s.push(
        1,
        "was_opened",
        serde_json::json!({ "owner": "Amal Haddad" }),
    );
    for i in 1..n {
        let amount = 100 + rng.below(50_000);
        let ty = if rng.below(100) < 60 {
            "was_credited"
        } else {
            "was_debited"
        };
        let data = match data {
            BankData::Small => serde_json::json!({ "amount": amount }),
            BankData::Peers => crate::peers::data(123, amount as i64),
        };
        s.push(i as u64 + 1, ty, data);
    }
    s
}
