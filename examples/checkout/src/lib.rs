//! A reactor over the cart example: when a cart is checked out, it appends
//! `order/{cart key}` `was_placed` and delivers an `order.placed` notification CloudEvent to
//! the reactor's sink.

use loom_guest::{EffectError, Event, ReactContext, Reaction, Reactor, Stream};
use serde::{Deserialize, Serialize};

/// The cart events this reactor cares about (other types are skipped).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CartEvent {
    /// `was_checked_out`.
    WasCheckedOut {},
}

/// Events it appends to `order/{key}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderEvent {
    /// `was_placed`, data `{cart, cart_position}`.
    WasPlaced {
        /// The cart's stream.
        cart: String,
        /// Position of the checkout event.
        cart_position: u64,
    },
}

/// Notifications delivered to the sink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notification {
    /// CloudEvents type `order.placed`.
    #[serde(rename = "order.placed")]
    OrderPlaced {
        /// The order's stream.
        order: String,
        /// The cart's stream.
        cart: String,
    },
}

/// The reactor.
#[derive(Debug)]
pub struct Checkout;

impl Reactor for Checkout {
    type Event = CartEvent;

    fn react(event: Event<'_, CartEvent>, ctx: &ReactContext) -> Result<Reaction, EffectError> {
        match event.data {
            CartEvent::WasCheckedOut {} => {
                let order = Stream::new("order", event.key())?;
                Reaction::none()
                    .append(
                        &order,
                        &OrderEvent::WasPlaced {
                            cart: event.subject().to_owned(),
                            cart_position: ctx.position,
                        },
                    )?
                    .deliver(
                        &order,
                        &Notification::OrderPlaced {
                            order: order.to_string(),
                            cart: event.subject().to_owned(),
                        },
                    )
            }
        }
    }
}

loom_guest::module! {
    reactor checkout: Checkout;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkout_places_an_order_and_notifies() {
        let reaction =
            loom_guest::testing::react::<Checkout>("cart/42", &CartEvent::WasCheckedOut {})
                .unwrap();
        assert_eq!(reaction.append.len(), 1);
        assert_eq!(reaction.append[0].subject, "order/42");
        assert_eq!(reaction.append[0].ty, "was_placed");
        assert_eq!(reaction.append[0].data["cart"], "cart/42");
        assert_eq!(reaction.deliver.len(), 1);
        assert_eq!(reaction.deliver[0].ty, "order.placed");
        assert_eq!(reaction.deliver[0].data["order"], "order/42");
        assert!(reaction.commands.is_empty());
    }

    #[test]
    fn other_cart_events_need_nothing() {
        #[derive(Serialize)]
        #[serde(rename_all = "snake_case")]
        enum Other {
            WasCreated {},
        }
        let reaction =
            loom_guest::testing::react::<Checkout>("cart/1", &Other::WasCreated {}).unwrap();
        assert_eq!(reaction, Reaction::none());
    }
}
