//! The selector parameters reads and subscriptions share (`subject`, `entity`, `type`,
//! `data`, `meta`).

/// Which events, by stream, entity, type and JSONPath.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    pub(crate) subjects: Vec<String>,
    pub(crate) entity: Option<String>,
    pub(crate) types: Vec<String>,
    pub(crate) data: Option<String>,
    pub(crate) meta: Option<String>,
}

impl Filter {
    /// Adds the query-string pairs.
    pub(crate) fn push_pairs(&self, pairs: &mut Vec<(&'static str, String)>) {
        pairs.extend(self.subjects.iter().map(|s| ("subject", s.clone())));
        pairs.extend(self.entity.iter().map(|e| ("entity", e.clone())));
        pairs.extend(self.types.iter().map(|t| ("type", t.clone())));
        pairs.extend(self.data.iter().map(|d| ("data", d.clone())));
        pairs.extend(self.meta.iter().map(|m| ("meta", m.clone())));
    }
}

/// The builder methods of a query type with a `filter: Filter` field.
macro_rules! filter_methods {
    () => {
        /// Only this stream (`{entity}/{key}`); repeatable.
        pub fn subject(mut self, subject: impl Into<String>) -> Self {
            self.filter.subjects.push(subject.into());
            self
        }

        /// Only this entity.
        pub fn entity(mut self, entity: impl Into<String>) -> Self {
            self.filter.entity = Some(entity.into());
            self
        }

        /// Only this event type; repeatable.
        pub fn event_type(mut self, ty: impl Into<String>) -> Self {
            self.filter.types.push(ty.into());
            self
        }

        /// Only events whose `data` this RFC 9535 JSONPath selects anything in.
        pub fn data(mut self, path: impl Into<String>) -> Self {
            self.filter.data = Some(path.into());
            self
        }

        /// Only events whose CloudEvents JSON this JSONPath selects anything in.
        pub fn meta(mut self, path: impl Into<String>) -> Self {
            self.filter.meta = Some(path.into());
            self
        }
    };
}

pub(crate) use filter_methods;
