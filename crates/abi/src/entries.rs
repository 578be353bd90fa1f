//! The inputs of each entry point, encoded by the host and decoded by the guest.

// Each entry's module takes what it needs through `super::*`.
use crate::*;

/// `evolve` input: `state: opt bytes (JSON; absent = initial)`, `count: u32`, `count × event`.
pub mod evolve {
    use super::*;

    /// Encodes an `evolve` input.
    pub fn encode<'e>(
        state: Option<&[u8]>,
        events: impl Clone + ExactSizeIterator<Item = EventRef<'e>>,
    ) -> Vec<u8> {
        let size = group_len(state, events.clone());
        let mut w = Encoder::with_capacity(size);
        write_group(&mut w, state, events);
        debug_assert_eq!(w.len(), size, "an evolve input is sized exactly");
        w.finish()
    }

    /// Writes an `evolve` input into `out`, which must be exactly [`input_len`] bytes (the
    /// guest's memory, so that the events are copied once).
    pub fn encode_into<'e>(
        state: Option<&[u8]>,
        events: impl ExactSizeIterator<Item = EventRef<'e>>,
        out: &mut [u8],
    ) -> Result<(), SizeMismatch> {
        let mut w = Encoder::over(out);
        write_group(&mut w, state, events);
        w.check()
    }

    /// How many bytes an `evolve` input (or one group of an `evolve_groups` input) takes
    /// with `state` and events of `events_len` bytes ([`Encoder::event_len`] each): a caller
    /// that has summed its events' sizes already need not walk them again.
    pub fn input_len(state: Option<&[u8]>, events_len: usize) -> usize {
        8 + state.map_or(0, <[u8]>::len) + events_len
    }

    /// One group: `state`, `count`, the events.
    pub(crate) fn write_group<'e, S: Sink>(
        w: &mut Encoder<S>,
        state: Option<&[u8]>,
        events: impl ExactSizeIterator<Item = EventRef<'e>>,
    ) {
        w.opt_bytes(state);
        w.u32(events.len() as u32);
        for e in events {
            w.event(&e);
        }
    }

    /// How many bytes one group (`state`, `count`, the events) takes in an input: inputs are
    /// allocated at their exact size, so that a catch-up call's megabytes are written once.
    pub(crate) fn group_len<'e>(
        state: Option<&[u8]>,
        events: impl Iterator<Item = EventRef<'e>>,
    ) -> usize {
        input_len(state, events.map(|e| Encoder::event_len(&e)).sum())
    }

    /// Decodes an `evolve` input: the state and a reader positioned at the events.
    pub fn decode(input: &[u8]) -> Result<(Option<&[u8]>, u32, Decoder<'_>), DecodeError> {
        let mut r = Decoder::new(input);
        let state = r.opt_bytes()?;
        let count = r.u32()?;
        Ok((state, count, r))
    }

    /// Reads one group's head (`state`, `count`) from a reader; the events follow.
    pub fn decode_group<'a>(r: &mut Decoder<'a>) -> Result<(Option<&'a [u8]>, u32), DecodeError> {
        let state = r.opt_bytes()?;
        let count = r.u32()?;
        Ok((state, count))
    }
}

/// `evolve_groups` input: `groups: u32`, then `groups` × an `evolve` input (`state: opt
/// bytes`, `count: u32`, `count` × event). Ok payload: `groups` × `state: bytes` (JSON), in
/// input order; each group's state is exactly what `evolve` gives for that group alone.
pub mod evolve_groups {
    use super::*;

    /// Encodes an `evolve_groups` input from `(state, events)` per group.
    pub fn encode<'e, E>(groups: &[(Option<&[u8]>, E)]) -> Vec<u8>
    where
        E: Clone + ExactSizeIterator<Item = EventRef<'e>>,
    {
        let size = encoded_len(groups);
        let mut w = Encoder::with_capacity(size);
        write(&mut w, groups);
        debug_assert_eq!(w.len(), size, "an evolve_groups input is sized exactly");
        w.finish()
    }

    /// Writes an `evolve_groups` input into `out`, which must be exactly [`encoded_len`]
    /// bytes (the guest's memory, so that the events are copied once).
    pub fn encode_into<'e, E>(
        groups: &[(Option<&[u8]>, E)],
        out: &mut [u8],
    ) -> Result<(), SizeMismatch>
    where
        E: Clone + ExactSizeIterator<Item = EventRef<'e>>,
    {
        let mut w = Encoder::over(out);
        write(&mut w, groups);
        w.check()
    }

    /// How many bytes an `evolve_groups` input takes.
    pub fn encoded_len<'e, E>(groups: &[(Option<&[u8]>, E)]) -> usize
    where
        E: Clone + ExactSizeIterator<Item = EventRef<'e>>,
    {
        input_len(
            groups
                .iter()
                .map(|(state, events)| evolve::group_len(*state, events.clone()))
                .sum(),
        )
    }

    /// How many bytes an `evolve_groups` input takes whose groups take `groups_len` bytes
    /// ([`evolve::input_len`] each).
    pub fn input_len(groups_len: usize) -> usize {
        4 + groups_len
    }

    fn write<'e, E, S: Sink>(w: &mut Encoder<S>, groups: &[(Option<&[u8]>, E)])
    where
        E: Clone + ExactSizeIterator<Item = EventRef<'e>>,
    {
        w.u32(groups.len() as u32);
        for (state, events) in groups {
            evolve::write_group(w, *state, events.clone());
        }
    }

    /// Decodes the group count; the reader then stands at the first group, which
    /// [`evolve::decode_group`] reads.
    pub fn decode(input: &[u8]) -> Result<(u32, Decoder<'_>), DecodeError> {
        let mut r = Decoder::new(input);
        let groups = r.u32()?;
        Ok((groups, r))
    }

    /// Encodes the whole ok output: the status byte, then the states.
    pub fn ok_output<'s>(states: impl IntoIterator<Item = &'s [u8]>) -> Vec<u8> {
        let mut w = Encoder::new();
        w.u8(CallStatus::Ok as u8);
        for s in states {
            w.bytes(s);
        }
        w.finish()
    }

    /// Splits an ok payload into exactly `groups` states.
    pub fn decode_states(payload: &[u8], groups: usize) -> Result<Vec<&[u8]>, DecodeError> {
        let mut r = Decoder::new(payload);
        let states = (0..groups)
            .map(|_| r.bytes())
            .collect::<Result<Vec<_>, _>>()?;
        if !r.rest().is_empty() {
            return Err(DecodeError(format!(
                "{} bytes after the {groups} states",
                r.rest().len()
            )));
        }
        Ok(states)
    }
}

/// `decide` input: `state: opt bytes`, `command: bytes (JSON)`, `subject: bytes`,
/// `revision: u64` (the stream revision the state was folded to); in ABI v2 followed by
/// `context: bytes (JSON)`.
pub mod decide {
    use super::*;

    /// Encodes an ABI v1 `decide` input.
    pub fn encode(state: Option<&[u8]>, command: &[u8], subject: &str, revision: u64) -> Vec<u8> {
        let mut w = Encoder::with_capacity(64 + command.len() + state.map_or(0, <[u8]>::len));
        w.opt_bytes(state);
        w.bytes(command);
        w.bytes(subject.as_bytes());
        w.u64(revision);
        w.finish()
    }

    /// Encodes an ABI v2 `decide` input: the v1 layout, then the context (JSON).
    pub fn encode_v2(
        state: Option<&[u8]>,
        command: &[u8],
        subject: &str,
        revision: u64,
        context: &[u8],
    ) -> Vec<u8> {
        let mut w = Encoder::with_capacity(
            64 + command.len() + context.len() + state.map_or(0, <[u8]>::len),
        );
        w.opt_bytes(state);
        w.bytes(command);
        w.bytes(subject.as_bytes());
        w.u64(revision);
        w.bytes(context);
        w.finish()
    }

    /// A decoded `decide` input.
    #[derive(Debug)]
    pub struct Input<'a> {
        /// State JSON, or `None` for the initial state.
        pub state: Option<&'a [u8]>,
        /// Command JSON.
        pub command: &'a [u8],
        /// The stream.
        pub subject: &'a str,
        /// Its revision.
        pub revision: u64,
        /// The context (JSON), in ABI v2; `None` in a v1 input.
        pub context: Option<&'a [u8]>,
    }

    /// Decodes a `decide` input of either version (a v2 input has the context after the v1
    /// fields).
    pub fn decode(input: &[u8]) -> Result<Input<'_>, DecodeError> {
        let mut r = Decoder::new(input);
        let state = r.opt_bytes()?;
        let command = r.bytes()?;
        let subject = std::str::from_utf8(r.bytes()?).map_err(|e| DecodeError(e.to_string()))?;
        let revision = r.u64()?;
        let context = if r.rest().is_empty() {
            None
        } else {
            Some(r.bytes()?)
        };
        Ok(Input {
            state,
            command,
            subject,
            revision,
            context,
        })
    }
}

/// `react` input: one event.
pub mod react {
    use super::*;

    /// Encodes a `react` input.
    pub fn encode(event: &EventRef<'_>) -> Vec<u8> {
        let mut w = Encoder::with_capacity(256 + event.data.len());
        w.event(event);
        w.finish()
    }

    /// Decodes a `react` input.
    pub fn decode(input: &[u8]) -> Result<EventRef<'_>, DecodeError> {
        Decoder::new(input).event()
    }
}

/// `query` input: `state: opt bytes`, `params: bytes (JSON)`.
pub mod query {
    use super::*;

    /// Encodes a `query` input.
    pub fn encode(state: Option<&[u8]>, params: &[u8]) -> Vec<u8> {
        let mut w = Encoder::new();
        w.opt_bytes(state);
        w.bytes(params);
        w.finish()
    }

    /// Decodes a `query` input: state and params.
    pub fn decode(input: &[u8]) -> Result<(Option<&[u8]>, &[u8]), DecodeError> {
        let mut r = Decoder::new(input);
        Ok((r.opt_bytes()?, r.bytes()?))
    }
}
