import CLMDB
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The one error type of the storage module: a code a program can switch on, and a
/// message a person understands.
public struct StorageError: Error, CustomStringConvertible, Equatable, Sendable {
    /// What went wrong, in a form a program can act on.
    public enum Code: Equatable, Sendable {
        /// The store reached its configured size ceiling (or the disk is full): the write
        /// was not applied; everything already stored is intact.
        case storageFull
        /// The disk under the data directory is full: the write was not applied.
        case diskFull
        /// Another process holds the data directory.
        case locked
        /// The data directory was written by a newer TortoiseMQ.
        case formatTooNew
        /// The task or failure named does not exist in the state the operation needs.
        case notFound
        /// The store was closed.
        case closed
        /// A flush to disk failed earlier, so a change may be missing from the disk while
        /// later ones are there: the store takes no more changes until it is opened again
        /// (which rebuilds its state from what did reach the disk).
        case halted
        /// The data on disk is not what this code wrote.
        case corrupt
        /// An operating-system or LMDB error not covered above.
        case io
    }

    /// What went wrong.
    public var code: Code
    /// A sentence for a person.
    public var message: String

    /// Makes an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// The message.
    public var description: String { message }

    static func lmdb(_ rc: Int32, _ what: String) -> StorageError {
        let text = String(cString: mdb_strerror(rc))
        switch rc {
        case MDB_MAP_FULL:
            return StorageError(.storageFull, "storage full: \(what) needs more space than the configured maximum store size")
        case ENOSPC:
            return StorageError(.diskFull, "storage full: no space left on the device (\(what))")
        case MDB_NOTFOUND:
            return StorageError(.notFound, "\(what): not found")
        case MDB_CORRUPTED, MDB_PAGE_NOTFOUND, MDB_INVALID, MDB_VERSION_MISMATCH:
            return StorageError(.corrupt, "\(what): the data file is damaged or not an LMDB store (\(text))")
        default:
            return StorageError(.io, "\(what) failed: \(text) (code \(rc))")
        }
    }
}

@inline(__always)
func check(_ rc: Int32, _ what: @autoclosure () -> String) throws(StorageError) {
    if rc != 0 { throw StorageError.lmdb(rc, what()) }
}
