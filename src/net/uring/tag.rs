//! What a completion is about: the `user_data` of each submission names
//! the operation, the socket's slot and the slot's generation, so that a
//! completion is never taken for one of a later socket in the same slot.

/// The kinds of operation the backend submits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    /// Multishot accept on a listener.
    Accept = 1,
    /// Multishot receive on a stream, into the stream buffer ring.
    Recv,
    /// Send of a stream's buffered output.
    Send,
    /// A connect this side started.
    Connect,
    /// A cancellation (of a receive over its cap, or of all of a closed
    /// socket's operations).
    Cancel,
    /// Multishot receive of datagrams, into the datagram buffer ring.
    RecvMsg,
    /// Send of one datagram; the tag's `aux` names its send slot.
    SendMsg,
}

/// The decoded `user_data` of one submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Tag {
    /// The socket's slot.
    pub(super) slot: u32,
    /// The slot's generation when the operation was submitted.
    pub(super) generation: u16,
    /// What was submitted.
    pub(super) op: Op,
    /// Operation-specific: the send slot of a [`Op::SendMsg`].
    pub(super) aux: u8,
}

impl Tag {
    /// Packs the tag: generation in bits 48..64, slot in 16..48, aux in
    /// 8..16 and the operation in 0..8 (never 0, so that `user_data` 0
    /// names no operation).
    pub(super) fn encode(self) -> u64 {
        u64::from(self.generation) << 48
            | u64::from(self.slot) << 16
            | u64::from(self.aux) << 8
            | self.op as u64
    }

    /// Unpacks a `user_data`; `None` for one that names no operation.
    pub(super) fn decode(user_data: u64) -> Option<Tag> {
        let op = match user_data & 0xff {
            1 => Op::Accept,
            2 => Op::Recv,
            3 => Op::Send,
            4 => Op::Connect,
            5 => Op::Cancel,
            6 => Op::RecvMsg,
            7 => Op::SendMsg,
            _ => return None,
        };
        Some(Tag {
            slot: (user_data >> 16) as u32,
            generation: (user_data >> 48) as u16,
            op,
            aux: (user_data >> 8) as u8,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_zero_is_none() {
        let tag = Tag {
            slot: u32::MAX,
            generation: 0xbeef,
            op: Op::SendMsg,
            aux: 63,
        };
        assert_eq!(Tag::decode(tag.encode()), Some(tag));
        assert_eq!(Tag::decode(0), None);
    }
}
