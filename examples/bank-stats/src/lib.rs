//! A `single` projection over the bank example: totals across every account.

use std::collections::BTreeMap;

use loom_guest::{Event, Projection, Query};
use serde::{Deserialize, Serialize};

/// Totals across all accounts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankStats {
    /// Sum of every deposit, cents.
    pub total_deposits: i64,
    /// Accounts opened.
    pub accounts: u64,
    /// The largest balance of any account, cents.
    pub largest_balance: i64,
    /// Balance per account key (needed to know the largest after a debit).
    pub balances: BTreeMap<String, i64>,
}

/// The bank's events (the same types as the `bank` example).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountEvent {
    /// `was_opened`.
    WasOpened {
        /// The owner.
        owner: String,
    },
    /// `was_credited`.
    WasCredited {
        /// Cents.
        amount: i64,
    },
    /// `was_debited`.
    WasDebited {
        /// Cents.
        amount: i64,
    },
}

impl Projection for BankStats {
    type Event = AccountEvent;

    fn evolve(&mut self, event: Event<'_, AccountEvent>) {
        let key = event.key().to_owned();
        match event.data {
            AccountEvent::WasOpened { .. } => {
                self.accounts += 1;
                self.balances.entry(key).or_insert(0);
            }
            AccountEvent::WasCredited { amount } => {
                self.total_deposits += amount;
                let b = self.balances.entry(key).or_insert(0);
                *b += amount;
                self.largest_balance = self.largest_balance.max(*b);
            }
            AccountEvent::WasDebited { amount } => {
                let b = self.balances.entry(key).or_insert(0);
                let before = *b;
                *b -= amount;
                // Only a debit of the (or a) richest account can lower the largest balance;
                // rescanning every account on every debit made the fold O(accounts).
                if amount < 0 || before == self.largest_balance {
                    self.largest_balance = self.balances.values().copied().max().unwrap_or(0);
                }
            }
        }
    }
}

/// Query: the top `n` accounts by balance.
#[derive(Debug, Deserialize)]
pub struct TopParams {
    /// How many (default 3).
    #[serde(default = "three")]
    pub n: usize,
}

fn three() -> usize {
    3
}

impl Query for BankStats {
    type Params = TopParams;
    type Output = Vec<(String, i64)>;

    fn query(&self, params: TopParams) -> Vec<(String, i64)> {
        let mut all: Vec<_> = self.balances.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(params.n);
        all
    }
}

loom_guest::module! {
    projection stats: BankStats;
    query stats: BankStats;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_follow_deposits_and_debits() {
        // Fold through the harness: every event is about the harness's single test stream.
        let stats = loom_guest::testing::fold::<BankStats>([
            AccountEvent::WasOpened { owner: "a".into() },
            AccountEvent::WasCredited { amount: 700 },
            AccountEvent::WasDebited { amount: 200 },
        ]);
        assert_eq!(stats.accounts, 1);
        assert_eq!(stats.total_deposits, 700);
        assert_eq!(stats.largest_balance, 500);
        assert_eq!(stats.query(TopParams { n: 5 }), [("1".to_string(), 500)]);
    }

    #[test]
    fn debiting_the_richest_account_finds_the_next_largest() {
        use AccountEvent::*;
        let opened = || WasOpened { owner: "o".into() };
        let before = [
            ("account/a", opened()),
            ("account/b", opened()),
            ("account/a", WasCredited { amount: 900 }),
            ("account/b", WasCredited { amount: 400 }),
            ("account/b", WasDebited { amount: 100 }),
        ];
        let stats = loom_guest::testing::fold_streams::<BankStats>(before.clone());
        assert_eq!(
            stats.largest_balance, 900,
            "a debit elsewhere keeps the largest"
        );
        let after = before
            .into_iter()
            .chain([("account/a", WasDebited { amount: 800 })]);
        let stats = loom_guest::testing::fold_streams::<BankStats>(after);
        assert_eq!(stats.largest_balance, 300, "then b is the richest");
    }
}
