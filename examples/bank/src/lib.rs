//! A bank account as a Loom module: a per-stream projection and a decider that refuses
//! overdrafts. Entity `account`; events `was_opened`, `was_credited`, `was_debited`; amounts
//! are integer cents.

use loom_guest::{DecideContext, Decider, Event, Projection};
use serde::{Deserialize, Serialize};

/// The account's state: `{ "owner", "balance" }` (`owner` is `null` until opened).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Who owns it; `None` before `was_opened`.
    pub owner: Option<String>,
    /// Balance in cents.
    pub balance: i64,
}

/// The account's events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountEvent {
    /// `was_opened`, data `{owner}`.
    WasOpened {
        /// The owner.
        owner: String,
    },
    /// `was_credited`, data `{amount}`.
    WasCredited {
        /// Cents.
        amount: i64,
    },
    /// `was_debited`, data `{amount}`.
    WasDebited {
        /// Cents.
        amount: i64,
    },
}

/// Commands, tagged by `"type"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AccountCommand {
    /// `{"type":"open","owner"}`
    Open {
        /// The owner.
        owner: String,
    },
    /// `{"type":"deposit","amount"}`
    Deposit {
        /// Cents (> 0).
        amount: i64,
    },
    /// `{"type":"withdraw","amount"}`
    Withdraw {
        /// Cents (> 0, at most the balance).
        amount: i64,
    },
}

impl Projection for Account {
    type Event = AccountEvent;

    fn evolve(&mut self, event: Event<'_, AccountEvent>) {
        match event.data {
            AccountEvent::WasOpened { owner } => self.owner = Some(owner),
            AccountEvent::WasCredited { amount } => self.balance += amount,
            AccountEvent::WasDebited { amount } => self.balance -= amount,
        }
    }
}

fn positive(amount: i64) -> Result<(), String> {
    if amount <= 0 {
        return Err(format!(
            "amount must be a positive number of cents, not {amount}"
        ));
    }
    Ok(())
}

impl Decider for Account {
    type Command = AccountCommand;
    type Rejection = String;

    fn decide(
        &self,
        command: AccountCommand,
        ctx: &DecideContext,
    ) -> Result<Vec<AccountEvent>, String> {
        let opened = self.owner.is_some();
        match command {
            AccountCommand::Open { owner } => {
                if opened {
                    return Err("the account is open already".into());
                }
                if owner.trim().is_empty() {
                    return Err("an account needs an owner".into());
                }
                Ok(vec![AccountEvent::WasOpened { owner }])
            }
            AccountCommand::Deposit { amount } => {
                if !opened {
                    return Err("the account is not open".into());
                }
                positive(amount)?;
                Ok(vec![AccountEvent::WasCredited { amount }])
            }
            AccountCommand::Withdraw { amount } => {
                if !opened {
                    return Err("the account is not open".into());
                }
                positive(amount)?;
                if amount > self.balance {
                    return Err(format!(
                        "insufficient funds: the balance of account {} is {}, less than {amount}",
                        ctx.key(),
                        self.balance
                    ));
                }
                Ok(vec![AccountEvent::WasDebited { amount }])
            }
        }
    }
}

loom_guest::module! {
    decider bank: Account in "account";
}

#[cfg(test)]
mod tests {
    use super::*;
    use loom_guest::testing::given;

    fn opened() -> AccountEvent {
        AccountEvent::WasOpened {
            owner: "amal".into(),
        }
    }

    #[test]
    fn opening() {
        given::<Account>([])
            .when(AccountCommand::Open {
                owner: "amal".into(),
            })
            .then([opened()]);
        given::<Account>([opened()])
            .when(AccountCommand::Open { owner: "bo".into() })
            .then_rejected_with("open already");
    }

    #[test]
    fn deposits_and_withdrawals() {
        given::<Account>([opened()])
            .when(AccountCommand::Deposit { amount: 500 })
            .then([AccountEvent::WasCredited { amount: 500 }]);
        given::<Account>([])
            .when(AccountCommand::Deposit { amount: 500 })
            .then_rejected_with("not open");
        given::<Account>([opened()])
            .when(AccountCommand::Deposit { amount: 0 })
            .then_rejected_with("positive");
        given::<Account>([opened(), AccountEvent::WasCredited { amount: 500 }])
            .when(AccountCommand::Withdraw { amount: 500 })
            .then([AccountEvent::WasDebited { amount: 500 }]);
    }

    #[test]
    fn overdraft_is_refused() {
        given::<Account>([
            opened(),
            AccountEvent::WasCredited { amount: 500 },
            AccountEvent::WasDebited { amount: 200 },
        ])
        .when(AccountCommand::Withdraw { amount: 301 })
        .then_rejected_with("insufficient funds");
        given::<Account>([opened()])
            .when(AccountCommand::Withdraw { amount: -5 })
            .then_rejected_with("positive");
    }
}
