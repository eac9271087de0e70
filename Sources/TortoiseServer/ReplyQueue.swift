import NIOCore
import TortoiseProtocol

/// Replies in the order their commands came, though they complete out of order (a
/// `PUT` waits for the disk, a `PING` does not).
struct ReplyQueue {
    final class Slot: @unchecked Sendable { // confined to the broker's loop
        var frame: ServerFrame?
        /// A `JSON` reply's body in a spool file (`frame` is then an empty `JSON`).
        var spooled: SpoolFile?
        var closeAfter = false
        /// Work that must wait for every earlier command's reply (a read that should see
        /// the earlier writes of the same connection); it runs when the slot is first.
        var onHead: ((Slot) -> Void)?
    }

    private var slots = CircularBuffer<Slot>()

    var count: Int { slots.count }

    /// A slot for a reply that comes later.
    mutating func reserve() -> Slot {
        let s = Slot()
        slots.append(s)
        return s
    }

    /// The oldest outstanding reply.
    var head: Slot? { slots.first }

    /// Takes the replies that are ready at the head, in order. `close` is true when one of
    /// them asks for the connection to close after it.
    mutating func drainReady() -> (frames: [(frame: ServerFrame, spooled: SpoolFile?)], close: Bool) {
        var out: [(frame: ServerFrame, spooled: SpoolFile?)] = []
        while let first = slots.first, let frame = first.frame {
            slots.removeFirst()
            out.append((frame, first.spooled))
            if first.closeAfter { return (out, true) }
        }
        return (out, false)
    }
}
