import CZlib
import Foundation

/// One group-commit batch as the redo log keeps it: everything needed to apply the
/// batch again, with the same outcome, to the state the batch was first applied to.
struct LoggedBatch: Equatable {
    /// Numbers every batch in commit order, from 1; never reused.
    var number: UInt64
    /// The clock the batch ran with (failure times, delays, retention).
    var now: Millis
    /// The next id and seq when the batch began.
    var nextID: UInt64
    var nextSeq: UInt64
    var maxDeliveries: Int
    /// The operations that changed something, in order.
    var ops: [StoreOperation]

    static let magic: UInt32 = 0x5457_414C  // "TWAL"
    /// magic, body length, body checksum.
    static let headerSize = 12

    /// The record: a header and the body, built in one buffer (this runs on every
    /// group commit): the header's length and checksum are filled in last.
    func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 64)
        w.u32(Self.magic)
        w.u32(0)
        w.u32(0)
        w.u64(number)
        w.i64(now)
        w.u64(nextID)
        w.u64(nextSeq)
        w.u32(UInt32(clamping: maxDeliveries))
        w.u32(UInt32(ops.count))
        for op in ops { op.encode(into: &w) }
        var record = w.bytes
        let length = UInt32(record.count - Self.headerSize)
        let sum = CRC32.checksum(record[Self.headerSize...])
        for i in 0..<4 {
            record[4 + i] = UInt8(truncatingIfNeeded: length >> UInt32(24 - 8 * i))
            record[8 + i] = UInt8(truncatingIfNeeded: sum >> UInt32(24 - 8 * i))
        }
        return record
    }

    /// Reads the record at `offset` of `bytes`; nil where there is none (zeros, a torn
    /// or stale tail), with the offset of the next record otherwise.
    static func decode(_ bytes: [UInt8], at offset: Int) -> (LoggedBatch, next: Int)? {
        guard offset + headerSize <= bytes.count else { return nil }
        var h = ByteReader(Array(bytes[offset..<offset + headerSize]))
        guard let magic = try? h.u32(), magic == Self.magic,
              let length = try? h.u32(), let sum = try? h.u32() else { return nil }
        let end = offset + headerSize + Int(length)
        guard end <= bytes.count else { return nil }
        guard CRC32.checksum(bytes[offset + headerSize..<end]) == sum else { return nil }
        let body = Array(bytes[offset + headerSize..<end])
        var r = ByteReader(body)
        do throws(StorageError) {
            var batch = LoggedBatch(number: try r.u64(), now: try r.i64(), nextID: try r.u64(), nextSeq: try r.u64(),
                                    maxDeliveries: Int(try r.u32()), ops: [])
            let count = Int(try r.u32())
            batch.ops.reserveCapacity(min(count, 4096))
            for _ in 0..<count { batch.ops.append(try StoreOperation.decode(&r)) }
            return (batch, end)
        } catch {
            return nil
        }
    }
}

/// The redo log: two preallocated files, `wal-0` and `wal-1`, written in turn. Every
/// batch's record is written before the batch commits to LMDB, and a durable change is
/// reported once its record is flushed: one short sequential write and one
/// `fdatasync` per group commit, instead of flushing the pages LMDB rewrote. LMDB's
/// file is flushed in the background; a log file is written over only once every batch
/// in it is in a flushed LMDB file. At open, the batches after the one LMDB holds are
/// applied again.
///
/// The writer thread appends; the flusher thread calls ``flushWritten()``; the background
/// LMDB flush reports through ``dataFlushed(through:)``.
final class RedoLog: @unchecked Sendable {
    private let fds: [Int32]
    private let paths: [String]
    /// Where a file stops counting as empty room: past it, the writer moves to the
    /// other file once that one is free.
    let fileSize: Int
    // Writer-only.
    private var current = 0
    private var offset = 0
    private var lastRecord: (file: Int, offset: Int)?
    /// Set when the current file passes half its size: LMDB's file should be flushed
    /// now, so that the other file is free by the time this one is full.
    private var halfFullSignalled = false
    // Shared with the background flush.
    private let lock = NSLock()
    private var newestBatch: [UInt64] = [0, 0]
    /// The files written since the last ``flushWritten()`` began (bit 0: wal-0).
    private var unflushed = 0
    private var flushedData: UInt64 = 0
    private var switchCount = 0
    /// How many times the writer moved to the other file.
    var switches: Int { lock.lock(); defer { lock.unlock() }; return switchCount }

    init(directory: String, fileSize: Int) throws(StorageError) {
        self.fileSize = fileSize
        var fds: [Int32] = []
        var paths: [String] = []
        for i in 0..<2 {
            let path = "\(directory)/wal-\(i)"
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o640)
            if fd < 0 {
                let message = String(cString: strerror(errno))
                fds.forEach { _ = close($0) }
                throw StorageError(.io, "cannot open the redo log \(path): \(message)")
            }
            fds.append(fd)
            paths.append(path)
        }
        self.fds = fds
        self.paths = paths
        // Zeros written now make later writes overwrite allocated blocks, so that a
        // flush needs no file-system metadata.
        for (fd, path) in zip(fds, paths) {
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw Self.failure("cannot stat", path) }
            if Int(st.st_size) < fileSize {
                let zeros = [UInt8](repeating: 0, count: fileSize - Int(st.st_size))
                let n = zeros.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(st.st_size)) }
                if n != zeros.count {
                    let code: StorageError.Code = errno == ENOSPC ? .diskFull : .io
                    _ = ftruncate(fd, st.st_size)
                    throw StorageError(code, "cannot make room for the redo log \(path): \(String(cString: strerror(errno)))")
                }
                guard fsync(fd) == 0 else { throw Self.failure("cannot flush", path) }
            }
        }
        _ = fsyncDirectory(directory)
    }

    deinit {
        fds.forEach { _ = close($0) }
    }

    private static func failure(_ what: String, _ path: String) -> StorageError {
        StorageError(.io, "\(what) the redo log \(path): \(String(cString: strerror(errno)))")
    }

    /// The highest batch number of any readable record seen by the last ``batches(after:)``.
    private var highestSeen: UInt64 = 0

    /// Every batch in the files numbered above `after`, in order, up to the first gap.
    func batches(after: UInt64) throws(StorageError) -> [LoggedBatch] {
        var found: [LoggedBatch] = []
        for (fd, path) in zip(fds, paths) {
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw Self.failure("cannot stat", path) }
            var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
            guard n == bytes.count else { throw Self.failure("cannot read", path) }
            var at = 0
            var previous: UInt64 = 0
            // A file is written from its start after each reuse: its records go up in
            // number until the stale ones of its last use begin.
            while let (batch, next) = LoggedBatch.decode(bytes, at: at), batch.number > previous {
                if batch.number > after { found.append(batch) }
                highestSeen = max(highestSeen, batch.number)
                previous = batch.number
                at = next
            }
        }
        found.sort { $0.number < $1.number }
        var run: [LoggedBatch] = []
        for b in found where b.number == after + UInt64(run.count) + 1 { run.append(b) }
        return run
    }

    /// Starts writing at the front of `wal-0`; every record in the files is in LMDB's
    /// flushed file (batches up to `through`).
    func restart(through: UInt64) throws(StorageError) {
        if highestSeen > through {
            // Records past a gap (a power loss kept a later write but not an earlier
            // one) must not meet the new records of the same numbers: clear the files.
            for (fd, path) in zip(fds, paths) {
                let zeros = [UInt8](repeating: 0, count: fileSize)
                let n = zeros.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
                guard n == zeros.count, ftruncate(fd, off_t(fileSize)) == 0, fsync(fd) == 0 else {
                    throw Self.failure("cannot clear", path)
                }
            }
            highestSeen = through
        }
        // A file that grew past its size (a checkpoint fell behind, or an older default
        // size) goes back to it: every record in it is held by the checkpoint, and a
        // flush of a smaller file is quicker.
        for (fd, path) in zip(fds, paths) {
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw Self.failure("cannot stat", path) }
            if Int(st.st_size) > fileSize {
                guard ftruncate(fd, off_t(fileSize)) == 0, fsync(fd) == 0 else { throw Self.failure("cannot trim", path) }
            }
        }
        lock.lock()
        newestBatch = [through, through]
        flushedData = through
        lock.unlock()
        current = 0
        offset = 0
        lastRecord = nil
        halfFullSignalled = false
    }

    /// Writes a batch's record (not flushed). Returns the file it went to.
    func append(_ batch: LoggedBatch) throws(StorageError) -> Int {
        let record = batch.encoded()
        if offset > 0 && offset + record.count > fileSize {
            let other = 1 - current
            lock.lock()
            let free = newestBatch[other] <= flushedData
            lock.unlock()
            // Otherwise the file grows until LMDB's flush catches up.
            if free {
                current = other
                offset = 0
                lock.lock()
                switchCount += 1
                lock.unlock()
                halfFullSignalled = false
            }
        }
        let fd = fds[current]
        let n = record.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
        if n != record.count {
            let code: StorageError.Code = errno == ENOSPC ? .diskFull : .io
            let message = String(cString: strerror(errno))
            lastRecord = (current, offset)
            retract()
            throw StorageError(code, code == .diskFull ? "no space left on the device for the redo log" : "cannot write the redo log \(paths[current]): \(message)")
        }
        lastRecord = (current, offset)
        offset += record.count
        lock.lock()
        newestBatch[current] = batch.number
        unflushed |= 1 << current
        lock.unlock()
        return current
    }

    /// Whether the current file just passed half its size (true once per use of a file).
    func takeHalfFull() -> Bool {
        guard !halfFullSignalled, offset >= fileSize / 2 else { return false }
        halfFullSignalled = true
        return true
    }

    /// Takes back the last record written (its batch did not commit): it is made
    /// unreadable, and the next record goes in its place.
    func retract() {
        guard let (file, at) = lastRecord else { return }
        let zeros = [UInt8](repeating: 0, count: LoggedBatch.headerSize)
        _ = zeros.withUnsafeBytes { pwrite(fds[file], $0.baseAddress, $0.count, off_t(at)) }
        current = file
        offset = at
        lastRecord = nil
    }

    /// Flushes every file written since the last call began: the records of every batch
    /// appended before this call, whichever file each went to. (Records nobody waits for,
    /// a delivery's, go along: when the log has just moved to its other file, flushing
    /// that file alone would confirm records that follow one only in the page cache, and
    /// the replay stops at the first missing number.) One caller at a time.
    func flushWritten() throws(StorageError) {
        lock.lock()
        let files = unflushed
        unflushed = 0
        lock.unlock()
        for i in 0..<2 where files & (1 << i) != 0 {
            if fdatasync(fds[i]) != 0 { throw Self.failure("cannot flush", paths[i]) }
        }
    }

    /// Flushes `file` now (a taken-back record, while another flush may be under way).
    func flush(file: Int) throws(StorageError) {
        if fdatasync(fds[file]) != 0 { throw Self.failure("cannot flush", paths[file]) }
    }

    /// LMDB's file is on disk with every batch up to `through`: log records up to it
    /// may be written over.
    func dataFlushed(through: UInt64) {
        lock.lock()
        flushedData = max(flushedData, through)
        lock.unlock()
    }
}

/// CRC-32 (IEEE 802.3, the one of gzip and PNG), for the redo log's records and the
/// checkpoint file: zlib's, which reads several bytes a step (a byte-at-a-time table was
/// 8% of the writer thread's time with 64 callers).
enum CRC32 {
    static func checksum<B: ContiguousBytes>(_ bytes: B) -> UInt32 {
        bytes.withUnsafeBytes { b in
            UInt32(truncatingIfNeeded: crc32_z(0, b.baseAddress?.assumingMemoryBound(to: Bytef.self), b.count))
        }
    }
}

extension StoreOperation {
    func encode(into w: inout ByteWriter) {
        switch self {
        case let .put(queue, payload):
            w.u8(1); w.string(queue); w.u32(UInt32(payload.count)); w.raw(payload)
        case let .take(queue):
            w.u8(2); w.string(queue)
        case let .claim(id):
            w.u8(3); w.u64(id)
        case let .ack(id):
            w.u8(4); w.u64(id)
        case let .nack(id, error):
            w.u8(5); w.u64(id); w.string(error)
        case let .requeue(id, readyAt):
            w.u8(6); w.u64(id); w.u8(readyAt == nil ? 0 : 1); w.i64(readyAt ?? 0)
        case let .release(id):
            w.u8(7); w.u64(id)
        case .promoteDue:
            w.u8(8)
        case let .replay(query):
            w.u8(9); query.encode(into: &w)
        case let .delete(query):
            w.u8(10); query.encode(into: &w)
        case let .prune(olderThan, limit):
            w.u8(11); w.i64(olderThan); w.u64(UInt64(limit))
        }
    }

    static func decode(_ r: inout ByteReader) throws(StorageError) -> StoreOperation {
        switch try r.u8() {
        case 1:
            let queue = try r.string()
            let n = Int(try r.u32())
            return .put(queue: queue, payload: Array(try r.raw(n)))
        case 2: return .take(queue: try r.string())
        case 3: return .claim(try r.u64())
        case 4: return .ack(try r.u64())
        case 5: return .nack(try r.u64(), error: try r.string())
        case 6:
            let id = try r.u64()
            let has = try r.u8()
            let at = try r.i64()
            return .requeue(id, readyAt: has == 0 ? nil : at)
        case 7: return .release(try r.u64())
        case 8: return .promoteDue
        case 9: return .replay(try FailedQuery.decode(&r))
        case 10: return .delete(try FailedQuery.decode(&r))
        case 11:
            let at = try r.i64()
            return .prune(olderThan: at, limit: Int(clamping: try r.u64()))
        case let tag: throw StorageError(.corrupt, "unknown operation \(tag) in the redo log")
        }
    }
}

extension FailedQuery {
    func encode(into w: inout ByteWriter) {
        func strings(_ list: [String]) { w.u32(UInt32(list.count)); list.forEach { w.string($0) } }
        func numbers(_ list: [UInt64]) { w.u32(UInt32(list.count)); list.forEach { w.u64($0) } }
        strings(words)
        strings(phrases)
        strings(queues)
        numbers(ids)
        w.u8(since == nil ? 0 : 1); w.i64(since ?? 0)
        w.u8(before == nil ? 0 : 1); w.i64(before ?? 0)
        strings(payloadTexts)
        numbers(groups)
    }

    static func decode(_ r: inout ByteReader) throws(StorageError) -> FailedQuery {
        func strings() throws(StorageError) -> [String] {
            var out: [String] = []
            for _ in 0..<Int(try r.u32()) { out.append(try r.string()) }
            return out
        }
        func numbers() throws(StorageError) -> [UInt64] {
            var out: [UInt64] = []
            for _ in 0..<Int(try r.u32()) { out.append(try r.u64()) }
            return out
        }
        var q = FailedQuery()
        q.words = try strings()
        q.phrases = try strings()
        q.queues = try strings()
        q.ids = try numbers()
        var has = try r.u8(); var at = try r.i64()
        q.since = has == 0 ? nil : at
        has = try r.u8(); at = try r.i64()
        q.before = has == 0 ? nil : at
        q.payloadTexts = try strings()
        q.groups = try numbers()
        return q
    }
}
