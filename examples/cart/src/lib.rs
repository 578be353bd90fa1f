//! The j17 shopping cart as a Loom module: one reducer, `cart`, that folds carts (so it serves
//! projections), decides commands and answers a query.
//!
//! Entity `cart`; events `was_created`, `had_item_added`, `had_item_removed`,
//! `was_checked_out`; prices are exact decimals (`29.99`), or whole numbers (`120` cents).

mod money;

pub use money::Money;

use loom_guest::{DecideContext, Decider, Event, Projection, Query};
use serde::{Deserialize, Serialize};

/// One line of the cart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Stock-keeping unit.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Unit price, exactly as written (`29.99`, `120`).
    pub price: Money,
    /// How many.
    pub quantity: i64,
}

/// Where the cart is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not created yet.
    #[default]
    Missing,
    /// Open for changes.
    Active,
    /// Checked out; no more changes.
    CheckedOut,
}

/// The cart's state: `{ "items": [...], "status": "active" | "checked_out" }`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    /// Lines, in the order first added.
    pub items: Vec<Item>,
    /// Life-cycle status.
    pub status: Status,
}

/// The cart's events, keyed by CloudEvents `type`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CartEvent {
    /// `was_created`, data `{}`.
    WasCreated {},
    /// `had_item_added`, data `{sku, name, price, quantity}`.
    HadItemAdded(Item),
    /// `had_item_removed`, data `{sku}`.
    HadItemRemoved {
        /// The removed line.
        sku: String,
    },
    /// `was_checked_out`, data `{}`.
    WasCheckedOut {},
}

/// Commands, tagged by `"type"`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CartCommand {
    /// `{"type":"create"}`
    Create,
    /// `{"type":"add_item","sku","name","price","quantity"}`
    AddItem {
        /// SKU.
        sku: String,
        /// Name.
        name: String,
        /// Unit price.
        price: Money,
        /// Quantity (> 0).
        quantity: i64,
    },
    /// `{"type":"remove_item","sku"}`
    RemoveItem {
        /// SKU.
        sku: String,
    },
    /// `{"type":"check_out"}`
    CheckOut,
}

impl Projection for Cart {
    type Event = CartEvent;

    fn evolve(&mut self, event: Event<'_, CartEvent>) {
        match event.data {
            CartEvent::WasCreated {} => self.status = Status::Active,
            CartEvent::HadItemAdded(item) => {
                match self.items.iter_mut().find(|i| i.sku == item.sku) {
                    Some(line) => {
                        line.quantity += item.quantity;
                        line.price = item.price;
                        line.name = item.name;
                    }
                    None => self.items.push(item),
                }
            }
            CartEvent::HadItemRemoved { sku } => self.items.retain(|i| i.sku != sku),
            CartEvent::WasCheckedOut {} => self.status = Status::CheckedOut,
        }
    }
}

impl Cart {
    fn must_be_active(&self) -> Result<(), String> {
        match self.status {
            Status::Missing => Err("the cart does not exist; create it first".into()),
            Status::CheckedOut => Err("the cart is checked out and can no longer change".into()),
            Status::Active => Ok(()),
        }
    }
}

impl Decider for Cart {
    type Command = CartCommand;
    type Rejection = String;

    fn decide(&self, command: CartCommand, _ctx: &DecideContext) -> Result<Vec<CartEvent>, String> {
        match command {
            CartCommand::Create => match self.status {
                Status::Missing => Ok(vec![CartEvent::WasCreated {}]),
                _ => Err("the cart exists already".into()),
            },
            CartCommand::AddItem {
                sku,
                name,
                price,
                quantity,
            } => {
                self.must_be_active()?;
                if quantity <= 0 {
                    return Err(format!("quantity must be positive, not {quantity}"));
                }
                if price.is_negative() {
                    return Err(format!("price must not be negative, not {price}"));
                }
                Ok(vec![CartEvent::HadItemAdded(Item {
                    sku,
                    name,
                    price,
                    quantity,
                })])
            }
            CartCommand::RemoveItem { sku } => {
                self.must_be_active()?;
                if !self.items.iter().any(|i| i.sku == sku) {
                    return Err(format!("the cart has no item {sku:?}"));
                }
                Ok(vec![CartEvent::HadItemRemoved { sku }])
            }
            CartCommand::CheckOut => {
                self.must_be_active()?;
                if self.items.is_empty() {
                    return Err("an empty cart cannot be checked out".into());
                }
                Ok(vec![CartEvent::WasCheckedOut {}])
            }
        }
    }
}

/// Query parameters: none needed (`null` or `{}`).
#[derive(Debug, Default, Deserialize)]
pub struct TotalParams {}

/// `query` answer: the cart's total.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Total {
    /// Sum of price × quantity, exact.
    pub total: Money,
    /// Number of units.
    pub units: i64,
}

impl Query for Cart {
    type Params = Option<TotalParams>;
    type Output = Total;

    fn query(&self, _params: Option<TotalParams>) -> Total {
        let mut total = Money::default();
        for i in &self.items {
            // Beyond 9.2 × 10^18 minor units: the call fails with this message (a panic is
            // logged and traps), rather than answering a wrong total.
            total = i
                .price
                .checked_mul(i.quantity)
                .and_then(|line| total.checked_add(line))
                .expect("the cart's total is too large to compute exactly");
        }
        Total {
            total,
            units: self.items.iter().map(|i| i.quantity).sum(),
        }
    }
}

loom_guest::module! {
    decider cart: Cart in "cart";
    query cart: Cart;
}

#[cfg(test)]
mod tests {
    use super::*;
    use loom_guest::testing::{fold, given};

    fn apple(quantity: i64) -> Item {
        Item {
            sku: "apple".into(),
            name: "Apple".into(),
            price: Money::whole(50),
            quantity,
        }
    }

    #[test]
    fn creating_a_cart() {
        given::<Cart>([])
            .when(CartCommand::Create)
            .then([CartEvent::WasCreated {}]);
        given::<Cart>([CartEvent::WasCreated {}])
            .when(CartCommand::Create)
            .then_rejected_with("exists already");
    }

    #[test]
    fn adding_items() {
        given::<Cart>([CartEvent::WasCreated {}])
            .when(CartCommand::AddItem {
                sku: "apple".into(),
                name: "Apple".into(),
                price: Money::whole(50),
                quantity: 2,
            })
            .then([CartEvent::HadItemAdded(apple(2))]);
        given::<Cart>([])
            .when(CartCommand::AddItem {
                sku: "apple".into(),
                name: "Apple".into(),
                price: Money::whole(50),
                quantity: 2,
            })
            .then_rejected_with("does not exist");
        given::<Cart>([
            CartEvent::WasCreated {},
            CartEvent::HadItemAdded(apple(1)),
            CartEvent::WasCheckedOut {},
        ])
        .when(CartCommand::AddItem {
            sku: "pear".into(),
            name: "Pear".into(),
            price: Money::whole(70),
            quantity: 1,
        })
        .then_rejected_with("checked out");
        given::<Cart>([CartEvent::WasCreated {}])
            .when(CartCommand::AddItem {
                sku: "apple".into(),
                name: "Apple".into(),
                price: Money::whole(50),
                quantity: 0,
            })
            .then_rejected_with("positive");
    }

    #[test]
    fn removing_and_checking_out() {
        given::<Cart>([CartEvent::WasCreated {}, CartEvent::HadItemAdded(apple(1))])
            .when(CartCommand::RemoveItem {
                sku: "apple".into(),
            })
            .then([CartEvent::HadItemRemoved {
                sku: "apple".into(),
            }]);
        given::<Cart>([CartEvent::WasCreated {}])
            .when(CartCommand::RemoveItem {
                sku: "apple".into(),
            })
            .then_rejected_with("no item");
        given::<Cart>([CartEvent::WasCreated {}])
            .when(CartCommand::CheckOut)
            .then_rejected_with("empty");
        given::<Cart>([CartEvent::WasCreated {}, CartEvent::HadItemAdded(apple(1))])
            .when(CartCommand::CheckOut)
            .then([CartEvent::WasCheckedOut {}]);
    }

    #[test]
    fn folding_merges_lines_and_serializes_as_documented() {
        let cart: Cart = fold([
            CartEvent::WasCreated {},
            CartEvent::HadItemAdded(apple(1)),
            CartEvent::HadItemAdded(apple(2)),
        ]);
        assert_eq!(cart.items, [apple(3)]);
        assert_eq!(
            loom_guest::serde_json::to_value(&cart).unwrap(),
            loom_guest::serde_json::json!({
                "items": [{"sku": "apple", "name": "Apple", "price": 50, "quantity": 3}],
                "status": "active"
            })
        );
        assert_eq!(
            cart.query(None),
            Total {
                total: Money::whole(150),
                units: 3
            }
        );
    }

    #[test]
    fn j17_prices_with_cents_are_kept_exactly() {
        use loom_guest::serde_json::{from_value, json, to_value};
        let command: CartCommand = from_value(json!(
            {"type": "add_item", "sku": "mug", "name": "Mug", "price": 29.99, "quantity": 3}
        ))
        .unwrap();
        let events = given::<Cart>([CartEvent::WasCreated {}])
            .when(command)
            .events()
            .unwrap();
        let mut all = vec![CartEvent::WasCreated {}];
        all.extend(events);
        let cart: Cart = fold(all);
        assert_eq!(to_value(&cart).unwrap()["items"][0]["price"], json!(29.99));
        assert_eq!(
            to_value(cart.query(None)).unwrap(),
            json!({"total": 89.97, "units": 3})
        );
    }

    #[test]
    fn the_reducers_decode_what_entity_json_registers() {
        loom_guest::testing::check_registration(
            LOOM_REDUCERS,
            "cart",
            include_str!("../entity.json"),
        );
    }
}
