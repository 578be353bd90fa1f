//! A library's loans, as one Loom module with four reducers (ABI version 2):
//!
//! * `books` — a projection per book (`book/{isbn}`): its title, and who holds it until when;
//!   with a query;
//! * `holdings` — one projection over every book: which member holds which books;
//! * `lending` — the decider of `book`: lends a book that is on the shelf, takes it back;
//! * `reminders` — a reactor: every loan also goes to the member's stream
//!   (`member/{member}` `had_book_lent`).
//!
//! Registrations: `book.json`, `member.json`.

use std::collections::BTreeMap;

use loom_guest::{
    DecideContext, Decider, EffectError, Event, Projection, Query, ReactContext, Reaction, Reactor,
    Stream,
};
use serde::{Deserialize, Serialize};

/// The events of a book, keyed by CloudEvents `type`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BookEvent {
    /// `was_added`: on the shelf.
    WasAdded {
        /// Its title.
        title: String,
    },
    /// `was_lent` to a member until a date.
    WasLent {
        /// Who has it.
        member: String,
        /// When it is due back (`YYYY-MM-DD`).
        due: String,
    },
    /// `was_returned`, data `{}` (or none).
    WasReturned {},
}

/// A book: `{ "title", "holder", "due", "loans" }`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Book {
    /// Its title; `None` until it was added.
    pub title: Option<String>,
    /// Who holds it now.
    pub holder: Option<String>,
    /// When it is due back.
    pub due: Option<String>,
    /// How often it was lent.
    pub loans: u64,
}

impl Projection for Book {
    type Event = BookEvent;

    fn evolve(&mut self, event: Event<'_, BookEvent>) {
        match event.data {
            BookEvent::WasAdded { title } => self.title = Some(title),
            BookEvent::WasLent { member, due } => {
                self.holder = Some(member);
                self.due = Some(due);
                self.loans += 1;
            }
            BookEvent::WasReturned {} => {
                self.holder = None;
                self.due = None;
            }
        }
    }
}

/// What the decider of `book` takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BookCommand {
    /// `{"type": "add", "title"}`.
    Add {
        /// Its title.
        title: String,
    },
    /// `{"type": "lend", "member", "due"}`.
    Lend {
        /// Who borrows it.
        member: String,
        /// Until when (`YYYY-MM-DD`).
        due: String,
    },
    /// `{"type": "return"}`.
    Return,
}

impl Decider for Book {
    type Command = BookCommand;
    type Rejection = String;

    fn decide(&self, command: BookCommand, ctx: &DecideContext) -> Result<Vec<BookEvent>, String> {
        let isbn = ctx.key();
        match (command, &self.title, &self.holder) {
            (BookCommand::Add { title }, None, _) => Ok(vec![BookEvent::WasAdded { title }]),
            (BookCommand::Add { .. }, Some(t), _) => {
                Err(format!("book {isbn} is in the catalogue already, as {t:?}"))
            }
            (_, None, _) => Err(format!("book {isbn} is not in the catalogue")),
            (BookCommand::Lend { member, .. }, _, Some(holder)) => Err(format!(
                "book {isbn} is lent to {holder}; {member} cannot borrow it before it is returned"
            )),
            (BookCommand::Lend { member, due }, _, None) => {
                Ok(vec![BookEvent::WasLent { member, due }])
            }
            (BookCommand::Return, _, None) => Err(format!("book {isbn} is not lent")),
            (BookCommand::Return, _, Some(_)) => Ok(vec![BookEvent::WasReturned {}]),
        }
    }
}

/// Query of `books`: whether a book is overdue on a date.
#[derive(Debug, Deserialize)]
pub struct OverdueParams {
    /// The day to look at (`YYYY-MM-DD`).
    pub on: String,
}

impl Query for Book {
    type Params = OverdueParams;
    type Output = bool;

    fn query(&self, params: OverdueParams) -> bool {
        // ISO dates compare as text.
        self.due
            .as_deref()
            .is_some_and(|due| due < params.on.as_str())
    }
}

/// Every loan in the library: member → the books they hold (`single` partition).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holdings {
    /// Books by member, in order.
    pub by_member: BTreeMap<String, Vec<String>>,
}

impl Projection for Holdings {
    type Event = BookEvent;

    fn evolve(&mut self, event: Event<'_, BookEvent>) {
        let isbn = event.key().to_owned();
        match event.data {
            BookEvent::WasAdded { .. } => {}
            BookEvent::WasLent { member, .. } => {
                self.by_member.entry(member).or_default().push(isbn)
            }
            BookEvent::WasReturned {} => {
                for books in self.by_member.values_mut() {
                    books.retain(|b| *b != isbn);
                }
                self.by_member.retain(|_, books| !books.is_empty());
            }
        }
    }
}

/// What `reminders` writes to a member's stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberEvent {
    /// `had_book_lent`.
    HadBookLent {
        /// The book.
        isbn: String,
        /// When it is due back.
        due: String,
    },
}

/// The book events `reminders` reacts to.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoanEvent {
    /// `was_lent`.
    WasLent {
        /// Who has it.
        member: String,
        /// Until when.
        due: String,
    },
}

/// Copies every loan to the member's stream.
#[derive(Debug)]
pub struct Reminders;

impl Reactor for Reminders {
    type Event = LoanEvent;

    fn react(event: Event<'_, LoanEvent>, _ctx: &ReactContext) -> Result<Reaction, EffectError> {
        let isbn = event.key().to_owned();
        match event.data {
            LoanEvent::WasLent { member, due } => Reaction::none().append(
                &Stream::new("member", member)?,
                &MemberEvent::HadBookLent { isbn, due },
            ),
        }
    }
}

loom_guest::module! {
    projection books: Book in "book";
    query books: Book;
    projection holdings: Holdings in "book";
    decider lending: Book in "book";
    reactor reminders: Reminders;
}

#[cfg(test)]
mod tests {
    use super::*;
    use loom_guest::testing::{check_registration, fold_streams, given, react};

    fn added() -> BookEvent {
        BookEvent::WasAdded {
            title: "Dune".into(),
        }
    }

    fn lent(member: &str) -> BookEvent {
        BookEvent::WasLent {
            member: member.into(),
            due: "2026-12-31".into(),
        }
    }

    #[test]
    fn a_lent_book_cannot_be_lent_again_and_the_refusal_names_it() {
        given::<Book>([added()])
            .when(BookCommand::Lend {
                member: "amal".into(),
                due: "2026-12-31".into(),
            })
            .then([lent("amal")]);
        let ctx = DecideContext::new("book/978-0441013593", 2);
        given::<Book>([added(), lent("amal")])
            .when_with(
                BookCommand::Lend {
                    member: "bo".into(),
                    due: "2027-01-10".into(),
                },
                &ctx,
            )
            .then_rejected_with("book 978-0441013593 is lent to amal");
        given::<Book>([added(), lent("amal")])
            .when(BookCommand::Return)
            .then([BookEvent::WasReturned {}]);
    }

    #[test]
    fn holdings_follow_loans_across_books() {
        let h: Holdings = fold_streams([
            ("book/1", added()),
            ("book/2", added()),
            ("book/1", lent("amal")),
            ("book/2", lent("amal")),
            ("book/1", BookEvent::WasReturned {}),
        ]);
        assert_eq!(h.by_member["amal"], ["2"]);
    }

    #[test]
    fn a_loan_is_copied_to_the_member() {
        let r = react::<Reminders>("book/1", &lent("amal")).unwrap();
        assert_eq!(r.append[0].subject, "member/amal");
        assert_eq!(r.append[0].ty, "had_book_lent");
        assert_eq!(r.append[0].data["isbn"], "1");
        // A member name that is no stream key fails the reaction with a message.
        let bad = react::<Reminders>(
            "book/1",
            &BookEvent::WasLent {
                member: String::new(),
                due: "2026-12-31".into(),
            },
        );
        assert!(bad.unwrap_err().to_string().contains("non-empty key"));
    }

    #[test]
    fn the_reducers_decode_what_is_registered() {
        check_registration(LOOM_REDUCERS, "book", include_str!("../book.json"));
        let names: Vec<&str> = LOOM_REDUCERS.iter().map(|r| r.name).collect();
        assert_eq!(names, ["books", "holdings", "lending", "reminders"]);
    }
}
