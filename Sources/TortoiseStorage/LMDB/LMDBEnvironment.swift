import CLMDB
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A named table inside an LMDB environment.
public struct LMDBDatabase: Sendable, Hashable {
    let dbi: MDB_dbi
}

/// An open LMDB environment: one memory-mapped file, many named tables.
///
/// Write transactions come from one writer at a time; read transactions may run on any
/// thread (the environment is opened with `MDB_NOTLS`) and never cross an `await`.
/// The map grows on demand (see ``grow()``) up to `maxMapSize`; a growth waits for the
/// read transactions in flight, which hold a shared lock for their short lives.
public final class LMDBEnvironment: @unchecked Sendable {
    /// Changed only by ``replaceFile(with:)``, under the write side of `resizeLock`: read
    /// it on the writer's thread, or inside a read transaction.
    private(set) var handle: OpaquePointer
    private let directory: String
    private let openFlags: UInt32
    private let maxDatabases: UInt32
    /// The current size of the memory map in bytes.
    public private(set) var mapSize: Int
    /// The largest the map may grow to.
    public let maxMapSize: Int
    private let resizeLock = ReadWriteLock()

    /// Options for opening an environment.
    public struct Options: Sendable {
        /// Starting map size in bytes.
        public var initialMapSize: Int = 64 << 20
        /// The ceiling: past it, writes fail with ``StorageError/Code/storageFull``.
        public var maxMapSize: Int = 256 << 30
        /// How many named tables may exist.
        public var maxDatabases: UInt32 = 16
        /// Commit without flushing: the caller syncs (group commit).
        public var noSync: Bool = true
        /// Creates the defaults.
        public init() {}
    }

    /// Opens (creating if needed) the environment whose files live in `directory`.
    public init(directory: String, options: Options) throws(StorageError) {
        var env: OpaquePointer?
        try check(mdb_env_create(&env), "creating the LMDB environment")
        guard let env else { throw StorageError(.io, "mdb_env_create returned no environment") }
        self.handle = env
        self.directory = directory
        self.maxDatabases = options.maxDatabases
        self.maxMapSize = max(options.maxMapSize, options.initialMapSize)
        var size = min(options.initialMapSize, self.maxMapSize)
        var flags = UInt32(MDB_NOTLS | MDB_NORDAHEAD)
        if options.noSync { flags |= UInt32(MDB_NOSYNC) }
        self.openFlags = flags
        do {
            try check(mdb_env_set_maxdbs(env, options.maxDatabases), "setting the table count")
            try check(mdb_env_set_maxreaders(env, 512), "setting the reader count")
            try check(mdb_env_set_mapsize(env, size), "setting the map size")
            try check(mdb_env_open(env, directory, flags, 0o640), "opening the store in \(directory)")
            var dead: Int32 = 0
            try check(mdb_reader_check(env, &dead), "clearing stale readers")
            // The file may already be larger than the starting size. LMDB then maps just
            // the pages its last snapshot uses, with no room for one more: a compacted file
            // (compacted at this open, or before a crash or power cut) has no free page
            // to reuse either, and the open's first write found the map full. Keep room
            // for the open's own writes (later ones grow the map when they need to).
            var info = MDB_envinfo()
            mdb_env_info(env, &info)
            size = max(size, info.me_mapsize)
            let wanted = Self.usedBytes(env) + (1 << 20)
            if size < wanted {
                size = wanted
                try check(mdb_env_set_mapsize(env, size), "setting the map size")
            }
        } catch {
            mdb_env_close(env)
            throw error
        }
        self.mapSize = size
    }

    private var isClosed = false

    deinit {
        if !isClosed {
            releasePins(before: .max)
            mdb_env_close(handle)
        }
    }

    /// Closes the environment once the read transactions in flight end. Later calls fail
    /// with ``StorageError/Code/closed``. The caller must have finished writing.
    public func close() {
        resizeLock.withWriteLock {
            if !isClosed {
                isClosed = true
                releasePins(before: .max)
                mdb_env_close(handle)
            }
        }
    }

    /// Opens or creates a named table. Call during set-up, before concurrent use.
    public func openDatabase(_ name: String, duplicateSort: Bool = false) throws(StorageError) -> LMDBDatabase {
        var dbi: MDB_dbi = 0
        try withWriteTransaction { (txn) throws(StorageError) in
            var flags = UInt32(MDB_CREATE)
            if duplicateSort { flags |= UInt32(MDB_DUPSORT) }
            try check(mdb_dbi_open(txn.handle, name, flags, &dbi), "opening table \(name)")
        }
        return LMDBDatabase(dbi: dbi)
    }

    // MARK: Snapshots that stay on disk (see ``Checkpoint``)

    private let pinLock = NSLock()
    /// Read transactions that keep snapshots' pages from being reused, by transaction id.
    private var pins: [(txnid: UInt64, txn: OpaquePointer)] = []

    /// The size of LMDB's pages in this environment.
    public var pageSize: Int {
        var stat = MDB_stat()
        mdb_env_stat(handle, &stat)
        return Int(stat.ms_psize)
    }

    /// Pins the latest committed snapshot: until ``releasePins(before:)`` lets it go, LMDB
    /// reuses none of its pages, so what a flush wrote of it stays. Returns its
    /// transaction id. Call between write transactions (from the writer).
    func pinLatestSnapshot() throws(StorageError) -> UInt64 {
        var txn: OpaquePointer?
        try check(mdb_txn_begin(handle, nil, UInt32(MDB_RDONLY), &txn), "pinning a snapshot")
        guard let txn else { throw StorageError(.io, "mdb_txn_begin returned no transaction") }
        let id = UInt64(mdb_txn_id(txn))
        pinLock.withLock { pins.append((id, txn)) }
        return id
    }

    /// Lets go of the pinned snapshots older than `txnid`.
    func releasePins(before txnid: UInt64) {
        pinLock.withLock {
            for p in pins where p.txnid < txnid { mdb_txn_abort(p.txn) }
            pins.removeAll { $0.txnid < txnid }
        }
    }

    /// The meta page LMDB wrote for transaction `txnid`, read from its file; nil when a
    /// later commit has already written over it. Call between write transactions.
    func metaPage(for txnid: UInt64) throws(StorageError) -> [UInt8]? {
        var fd: Int32 = -1
        try check(mdb_env_get_fd(handle, &fd), "reading the store's meta page")
        let size = pageSize
        let page = Int(txnid & 1)
        var bytes = [UInt8](repeating: 0, count: size)
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, size, off_t(page * size)) }
        guard n == size else { throw StorageError(.io, "cannot read the store's meta page: \(String(cString: strerror(errno)))") }
        return Self.metaTxnid(bytes) == txnid ? bytes : nil
    }

    /// Where LMDB keeps a meta page's transaction id: after the 16-byte page header, the
    /// magic and version, the address and map size, the two table records (48 bytes each)
    /// and the last page number.
    static let metaTxnidOffset = 16 + 4 + 4 + 8 + 8 + 2 * 48 + 8
    static let metaMagic: UInt32 = 0xBEEF_C0DE

    static func metaTxnid(_ page: [UInt8]) -> UInt64? {
        guard page.count >= metaTxnidOffset + 8 else { return nil }
        let magic = page.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 16, as: UInt32.self) }
        guard UInt32(littleEndian: magic) == metaMagic else { return nil }
        return UInt64(littleEndian: page.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: metaTxnidOffset, as: UInt64.self) })
    }

    /// Puts `page` (a meta page saved by a checkpoint) in both meta slots of the LMDB file
    /// in `directory`, and flushes it. Run before opening the environment.
    static func restoreMeta(directory: String, page: [UInt8]) throws(StorageError) {
        let path = directory + "/data.mdb"
        let fd = open(path, O_RDWR | O_CLOEXEC)
        if fd < 0 { throw StorageError(.io, "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { _ = Glibc.close(fd) }
        for slot in 0..<2 {
            var copy = page
            // The page header starts with the page's own number.
            withUnsafeBytes(of: UInt64(slot).littleEndian) { n in copy.replaceSubrange(0..<8, with: n) }
            let written = copy.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(slot * page.count)) }
            guard written == page.count else { throw StorageError(.io, "cannot write \(path): \(String(cString: strerror(errno)))") }
        }
        guard fdatasync(fd) == 0 else { throw StorageError(.io, "cannot flush \(path): \(String(cString: strerror(errno)))") }
    }

    /// Writes the latest snapshot without its free pages (`MDB_CP_COMPACT`: live pages
    /// renumbered from the front, transaction id 1) to a new file at `path`, and flushes it.
    /// Any thread: it reads as a read transaction does (the map cannot move meanwhile),
    /// and the writer may go on committing.
    func writeCompactCopy(to path: String) throws(StorageError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
        if fd < 0 { throw StorageError(.io, "cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { _ = Glibc.close(fd) }
        try resizeLock.withReadLock { () throws(StorageError) in
            if isClosed { throw StorageError(.closed, "the store is closed") }
            try check(mdb_env_copyfd2(handle, fd, UInt32(MDB_CP_COMPACT)), "writing a compacted copy of the store")
        }
        guard fdatasync(fd) == 0 else { throw StorageError(.io, "cannot flush \(path): \(String(cString: strerror(errno)))") }
    }

    /// The value under `key` in the table `table` of the LMDB file at `path` (one that no
    /// environment of this process has open), read without a lock file.
    static func value(inFile path: String, table: String, key: [UInt8]) throws(StorageError) -> [UInt8]? {
        var created: OpaquePointer?
        try check(mdb_env_create(&created), "creating an LMDB environment")
        guard let env = created else { throw StorageError(.io, "mdb_env_create returned no environment") }
        defer { mdb_env_close(env) }
        try check(mdb_env_set_maxdbs(env, 32), "setting the table count")
        try check(mdb_env_open(env, path, UInt32(MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS), 0o640), "opening \(path)")
        return try Self.read(env, table: table, key: key)
    }

    private static func read(_ env: OpaquePointer, table: String, key: [UInt8]) throws(StorageError) -> [UInt8]? {
        let txn = try LMDBTransaction(env: env, parent: nil, readOnly: true)
        var dbi: MDB_dbi = 0
        let rc = mdb_dbi_open(txn.handle, table, 0, &dbi)
        if rc == MDB_NOTFOUND { return nil }
        try check(rc, "opening table \(table)")
        return try txn.get(LMDBDatabase(dbi: dbi), key)
    }

    /// Puts the file at `copy` (a compacted copy, flushed) in place of `data.mdb` and
    /// opens it, while no read transaction runs: the pins go, the old environment closes,
    /// the copy is renamed over the file (the directory flushed), the new one opens with
    /// the same map size, and `ready` runs before any reader may start: it opens the
    /// tables again (in the same order they get the same handles) and may write, so that
    /// readers see the new file only once it is caught up. Inside `ready` the writer's
    /// own calls (``grow(limit:)``, ``freeBytes()``, ``writerRead(_:)``) do not wait for
    /// the lock it holds. Call from the writer, between write transactions. If it fails
    /// once the old environment is closed, the environment stays closed.
    func replaceFile(with copy: String, ready: () throws(StorageError) -> Void) throws(StorageError) {
        try reopen(ready: ready) { () throws(StorageError) in
            let path = directory + "/data.mdb"
            // Freeing the old file is left to a thread of its own: changes wait meanwhile.
            guard replaceKeepingOldOpen(path, with: copy) else {
                throw StorageError(.io, "cannot put the compacted copy in place of \(path): \(String(cString: strerror(errno)))")
            }
            guard fsyncDirectory(directory) else { throw StorageError(.io, "cannot flush the directory \(directory)") }
        }
    }

    /// Closes the environment and opens its file again, as ``replaceFile(with:ready:)``
    /// does but for the file's replacement. Closing it frees the copies of pages that LMDB
    /// made for write transactions: it keeps every one for later transactions, so a
    /// single big transaction (a `REPLAY` of many failures) would hold its memory for good.
    func reopen(ready: () throws(StorageError) -> Void) throws(StorageError) {
        try reopen(ready: ready) { () throws(StorageError) in }
    }

    private func reopen(ready: () throws(StorageError) -> Void, whileClosed: () throws(StorageError) -> Void) throws(StorageError) {
        try resizeLock.withWriteLock { () throws(StorageError) in
            if isClosed { throw StorageError(.closed, "the store is closed") }
            releasePins(before: .max)
            mdb_env_close(handle)
            isClosed = true
            try whileClosed()
            var env: OpaquePointer?
            try check(mdb_env_create(&env), "creating the LMDB environment")
            guard let env else { throw StorageError(.io, "mdb_env_create returned no environment") }
            do throws(StorageError) {
                try check(mdb_env_set_maxdbs(env, maxDatabases), "setting the table count")
                try check(mdb_env_set_maxreaders(env, 512), "setting the reader count")
                try check(mdb_env_set_mapsize(env, mapSize), "setting the map size")
                try check(mdb_env_open(env, directory, openFlags, 0o640), "opening the store in \(directory) again")
            } catch {
                mdb_env_close(env)
                throw error
            }
            handle = env
            isClosed = false
            writerInside = true
            defer { writerInside = false }
            do throws(StorageError) {
                try ready()
            } catch {
                isClosed = true
                releasePins(before: .max)
                mdb_env_close(env)
                throw error
            }
        }
    }

    /// True while the writer runs ``replaceFile(with:ready:)``'s `ready`, holding the
    /// write side of `resizeLock` (writer-only).
    private var writerInside = false

    /// A read transaction for the writer's thread (see ``replaceFile(with:ready:)``).
    func writerRead<R>(_ body: (borrowing LMDBTransaction) throws(StorageError) -> R) throws(StorageError) -> R {
        if writerInside {
            let txn = try LMDBTransaction(env: handle, parent: nil, readOnly: true)
            let result = try body(txn)
            txn.abort()
            return result
        }
        return try withReadTransaction(body)
    }

    /// Flushes everything committed so far to disk (`fdatasync`).
    public func sync() throws(StorageError) {
        if isClosed { throw StorageError(.closed, "the store is closed") }
        try check(mdb_env_sync(handle, 1), "flushing the store to disk")
    }

    /// Room kept past ``maxMapSize`` for changes that free space (acks, deletes): LMDB
    /// copies pages on write, so even a delete needs a few free pages.
    public var reserve: Int { max(1 << 20, maxMapSize / 32) }

    /// How far into the file LMDB has written pages: space that is in use or on its free list.
    public var usedBytes: Int { Self.usedBytes(handle) }

    private static func usedBytes(_ env: OpaquePointer) -> Int {
        var info = MDB_envinfo()
        mdb_env_info(env, &info)
        var stat = MDB_stat()
        mdb_env_stat(env, &stat)
        return (info.me_last_pgno + 1) * Int(stat.ms_psize)
    }

    /// Bytes on LMDB's free list (pages a later write can reuse), read from its free-page
    /// table. Writer-only, or before the store runs.
    public func freeBytes() throws(StorageError) -> Int {
        var stat = MDB_stat()
        mdb_env_stat(handle, &stat)
        let pageSize = Int(stat.ms_psize)
        return try writerRead { (txn) throws(StorageError) -> Int in
            try txn.withCursor(LMDBDatabase(dbi: 0)) { (c) throws(StorageError) -> Int in
                var pages = 0
                var e = try c.first()
                while let entry = e {
                    // Each value is an id list whose first word is its length.
                    if entry.value.count >= MemoryLayout<Int>.size {
                        pages += entry.value.withUnsafeBytes { $0.loadUnaligned(as: Int.self) }
                    }
                    e = try c.next()
                }
                return pages * pageSize
            }
        }
    }

    /// Doubles the map, up to `limit` (``maxMapSize`` unless growing into the
    /// ``reserve``). Returns false when already there. Call only from the writer,
    /// between write transactions.
    public func grow(limit: Int? = nil) throws(StorageError) -> Bool {
        let limit = limit ?? maxMapSize
        guard mapSize < limit else { return false }
        let newSize = min(limit, mapSize * 2)
        if writerInside {
            try check(mdb_env_set_mapsize(handle, newSize), "growing the map to \(newSize) bytes")
        } else {
            try resizeLock.withWriteLock { () throws(StorageError) in
                try check(mdb_env_set_mapsize(handle, newSize), "growing the map to \(newSize) bytes")
            }
        }
        mapSize = newSize
        return true
    }

    /// Doubles the map, up to ``maxMapSize``, if no read transaction (a search, a
    /// compaction's copy) runs at the moment; otherwise leaves it as it is rather than
    /// wait for them. Returns whether it grew. Writer-only, between write transactions.
    func growIfNobodyReads() throws(StorageError) -> Bool {
        guard mapSize < maxMapSize, !writerInside else { return false }
        let newSize = min(maxMapSize, mapSize * 2)
        let grown = try resizeLock.withWriteLockIfFree { () throws(StorageError) -> Bool in
            try check(mdb_env_set_mapsize(handle, newSize), "growing the map to \(newSize) bytes")
            return true
        }
        guard grown == true else { return false }
        mapSize = newSize
        return true
    }

    /// Runs `body` in a read-only transaction.
    public func withReadTransaction<R>(_ body: (borrowing LMDBTransaction) throws(StorageError) -> R) throws(StorageError) -> R {
        try resizeLock.withReadLock { () throws(StorageError) -> R in
            if isClosed { throw StorageError(.closed, "the store is closed") }
            let txn = try LMDBTransaction(env: handle, parent: nil, readOnly: true)
            let result = try body(txn)
            txn.abort()
            return result
        }
    }

    /// Runs `body` in a write transaction and commits it when `body` returns; an error
    /// aborts it. Only one writer may run at a time (LMDB blocks a second one).
    public func withWriteTransaction<R>(_ body: (borrowing LMDBTransaction) throws(StorageError) -> R) throws(StorageError) -> R {
        if isClosed { throw StorageError(.closed, "the store is closed") }
        let txn = try LMDBTransaction(env: handle, parent: nil, readOnly: false)
        let result = try body(txn)
        try txn.commit()
        return result
    }
}

/// A readers-writer lock over pthreads.
final class ReadWriteLock: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>

    init() {
        lock = .allocate(capacity: 1)
        pthread_rwlock_init(lock, nil)
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    func withReadLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    func withWriteLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    /// Runs `body` under the write side if it is free now; nil if it was not.
    func withWriteLockIfFree<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R? {
        guard pthread_rwlock_trywrlock(lock) == 0 else { return nil }
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}
