import CLMDB
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
    let handle: OpaquePointer
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
        self.maxMapSize = max(options.maxMapSize, options.initialMapSize)
        var size = min(options.initialMapSize, self.maxMapSize)
        do {
            try check(mdb_env_set_maxdbs(env, options.maxDatabases), "setting the table count")
            try check(mdb_env_set_maxreaders(env, 512), "setting the reader count")
            try check(mdb_env_set_mapsize(env, size), "setting the map size")
            var flags = UInt32(MDB_NOTLS | MDB_NORDAHEAD)
            if options.noSync { flags |= UInt32(MDB_NOSYNC) }
            try check(mdb_env_open(env, directory, flags, 0o640), "opening the store in \(directory)")
            var dead: Int32 = 0
            try check(mdb_reader_check(env, &dead), "clearing stale readers")
            // The file may already be larger than the starting size.
            var info = MDB_envinfo()
            mdb_env_info(env, &info)
            size = max(size, info.me_mapsize)
        } catch {
            mdb_env_close(env)
            throw error
        }
        self.mapSize = size
    }

    private var isClosed = false

    deinit {
        if !isClosed { mdb_env_close(handle) }
    }

    /// Closes the environment once the read transactions in flight end. Later calls fail
    /// with ``StorageError/Code/closed``. The caller must have finished writing.
    public func close() {
        resizeLock.withWriteLock {
            if !isClosed {
                isClosed = true
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

    /// Flushes everything committed so far to disk (`fdatasync`).
    public func sync() throws(StorageError) {
        if isClosed { throw StorageError(.closed, "the store is closed") }
        try check(mdb_env_sync(handle, 1), "flushing the store to disk")
    }

    /// Room kept past ``maxMapSize`` for changes that free space (acks, deletes): LMDB
    /// copies pages on write, so even a delete needs a few free pages.
    public var reserve: Int { max(1 << 20, maxMapSize / 32) }

    /// How far into the file LMDB has written pages: space that is in use or on its free list.
    public var usedBytes: Int {
        var info = MDB_envinfo()
        mdb_env_info(handle, &info)
        var stat = MDB_stat()
        mdb_env_stat(handle, &stat)
        return (info.me_last_pgno + 1) * Int(stat.ms_psize)
    }

    /// Bytes on LMDB's free list (pages a later write can reuse), read from its free-page table.
    public func freeBytes() throws(StorageError) -> Int {
        var stat = MDB_stat()
        mdb_env_stat(handle, &stat)
        let pageSize = Int(stat.ms_psize)
        return try withReadTransaction { (txn) throws(StorageError) -> Int in
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
        try resizeLock.withWriteLock { () throws(StorageError) in
            try check(mdb_env_set_mapsize(handle, newSize), "growing the map to \(newSize) bytes")
        }
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
}
