#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A snapshot of LMDB's file that is wholly on disk: the meta page LMDB wrote for it and
/// the number of the last batch it holds. The redo log keeps every batch after it.
///
/// LMDB's file is flushed in the background without ordering (`MDB_NOSYNC`): a power cut
/// during a flush can leave a newer meta page on disk whose pages did not all get there.
/// Every page of a checkpointed snapshot stays as it is until the next checkpoint is on
/// disk (a read transaction pins it, so LMDB reuses none of its pages), so putting its
/// meta page back at open always gives a whole tree, which the log then brings up to date.
struct Checkpoint: Equatable {
    /// LMDB's transaction id of the snapshot.
    var txnid: UInt64
    /// The last batch of the redo log the snapshot holds.
    var batch: UInt64
    /// The meta page as LMDB wrote it for `txnid` (one page).
    var metaPage: [UInt8]
    /// Which file it belongs to: counts the compactions while the store runs (not stored;
    /// a snapshot of a file that was replaced since is not recorded).
    var generation = 0
}

/// The `checkpoint` file of a data directory: two slots written in turn, each with a
/// CRC, so that a torn write of one leaves the other.
final class CheckpointFile {
    static let name = "checkpoint"
    private static let magic: [UInt8] = Array("TCKP".utf8)
    private static let headerSize = 32
    let path: String
    private var fd: Int32
    private let pageSize: Int
    private var slotSize: Int { Self.headerSize + pageSize }
    /// The transaction id in each slot (0: none).
    private var slotTxnids: [UInt64] = [0, 0]

    init(directory: String, pageSize: Int) throws(StorageError) {
        path = directory + "/" + Self.name
        self.pageSize = pageSize
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o640)
        if fd < 0 { throw StorageError(.io, "cannot open \(path): \(String(cString: strerror(errno)))") }
        for slot in 0..<2 { slotTxnids[slot] = readSlot(slot)?.txnid ?? 0 }
    }

    deinit { close(fd) }

    /// Starts a new, empty file at the same path (the old one was removed).
    func reopen() throws(StorageError) {
        let new = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
        if new < 0 { throw StorageError(.io, "cannot create \(path): \(String(cString: strerror(errno)))") }
        close(fd)
        fd = new
        slotTxnids = [0, 0]
    }

    /// Removes the `checkpoint` file of `directory` (if there is one) and flushes the
    /// directory; false when either fails. LMDB's file then opens as it is.
    static func remove(in directory: String) -> Bool {
        (unlink(directory + "/" + name) == 0 || errno == ENOENT) && fsyncDirectory(directory)
    }

    /// The newest whole checkpoint in `directory`, if any (read before LMDB opens).
    static func latest(in directory: String, pageSize: Int) -> Checkpoint? {
        guard access(directory + "/" + name, F_OK) == 0, let file = try? CheckpointFile(directory: directory, pageSize: pageSize) else { return nil }
        return file.latest
    }

    var latest: Checkpoint? {
        [readSlot(0), readSlot(1)].compactMap { $0 }.max { $0.txnid < $1.txnid }
    }

    private func readSlot(_ slot: Int) -> Checkpoint? {
        var bytes = [UInt8](repeating: 0, count: slotSize)
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(slot * slotSize)) }
        guard n == slotSize, Array(bytes[0..<4]) == Self.magic else { return nil }
        var r = ByteReader(Array(bytes[4..<Self.headerSize]))
        guard let version = try? r.u32(), version == 1,
              let txnid = try? r.u64(), let batch = try? r.u64(),
              let size = try? r.u32(), Int(size) == pageSize,
              let crc = try? r.u32(),
              crc == CRC32.checksum(bytes[4..<(Self.headerSize - 4)] + bytes[Self.headerSize...]) else { return nil }
        return Checkpoint(txnid: txnid, batch: batch, metaPage: Array(bytes[Self.headerSize...]))
    }

    /// Writes `checkpoint` over the older slot and flushes it.
    func write(_ checkpoint: Checkpoint) throws(StorageError) {
        precondition(checkpoint.metaPage.count == pageSize)
        let slot = slotTxnids[0] <= slotTxnids[1] ? 0 : 1
        var w = ByteWriter()
        w.u32(1); w.u64(checkpoint.txnid); w.u64(checkpoint.batch); w.u32(UInt32(pageSize))
        let crc = CRC32.checksum(w.bytes + checkpoint.metaPage)
        w.u32(crc)
        let bytes = Self.magic + w.bytes + checkpoint.metaPage
        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(slot * slotSize)) }
        guard n == bytes.count, fdatasync(fd) == 0 else {
            throw StorageError(.io, "cannot write \(path): \(String(cString: strerror(errno)))")
        }
        slotTxnids[slot] = checkpoint.txnid
    }
}
