import CLMDB

/// An LMDB transaction. It cannot be copied, and `commit()` / `abort()` consume it, so
/// using it after it ended does not compile; dropping it aborts it.
public struct LMDBTransaction: ~Copyable {
    let handle: OpaquePointer

    init(env: OpaquePointer, parent: OpaquePointer?, readOnly: Bool) throws(StorageError) {
        var txn: OpaquePointer?
        let flags = readOnly ? UInt32(MDB_RDONLY) : 0
        try check(mdb_txn_begin(env, parent, flags, &txn), readOnly ? "starting a read transaction" : "starting a write transaction")
        guard let txn else { throw StorageError(.io, "mdb_txn_begin returned no transaction") }
        handle = txn
    }

    deinit {
        mdb_txn_abort(handle)
    }

    /// Makes every change of this transaction visible (and, unless the environment was
    /// opened without sync, durable).
    public consuming func commit() throws(StorageError) {
        let h = handle
        discard self
        try check(mdb_txn_commit(h), "committing a transaction")
    }

    /// Drops every change of this transaction.
    public consuming func abort() {
        let h = handle
        discard self
        mdb_txn_abort(h)
    }

    /// Runs `body` in a nested transaction: its changes join this one when it returns, and
    /// vanish (leaving this transaction usable) when it throws.
    public func nested<R>(_ body: (borrowing LMDBTransaction) throws(StorageError) -> R) throws(StorageError) -> R {
        let env = mdb_txn_env(handle)!
        let child = try LMDBTransaction(env: env, parent: handle, readOnly: false)
        let result: R
        do {
            result = try body(child)
        } catch {
            child.abort()
            throw error
        }
        try child.commit()
        return result
    }

    /// `body`'s answer about the value stored under `key`, read in place (the bytes are
    /// LMDB's and valid only during `body`), or nil when there is none.
    public func withValue<R>(_ db: LMDBDatabase, _ key: [UInt8],
                             _ body: (UnsafeRawBufferPointer) throws(StorageError) -> R) throws(StorageError) -> R? {
        var value = MDB_val()
        let rc = key.withUnsafeBytes { k in
            var kv = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
            return mdb_get(handle, db.dbi, &kv, &value)
        }
        if rc == MDB_NOTFOUND { return nil }
        try check(rc, "reading a record")
        return try body(UnsafeRawBufferPointer(start: value.mv_data, count: value.mv_size))
    }

    /// The value stored under `key`, copied out, or nil.
    public func get(_ db: LMDBDatabase, _ key: [UInt8]) throws(StorageError) -> [UInt8]? {
        try withValue(db, key) { Array($0) }
    }

    /// Whether `key` is present.
    public func contains(_ db: LMDBDatabase, _ key: [UInt8]) throws(StorageError) -> Bool {
        var value = MDB_val()
        let rc = key.withUnsafeBytes { k in
            var kv = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
            return mdb_get(handle, db.dbi, &kv, &value)
        }
        if rc == MDB_NOTFOUND { return false }
        try check(rc, "reading a record")
        return true
    }

    /// Stores `value` under `key`, replacing what was there (or adding a duplicate in a
    /// sorted-duplicate table).
    public func put(_ db: LMDBDatabase, _ key: [UInt8], _ value: [UInt8]) throws(StorageError) {
        let rc = key.withUnsafeBytes { k in
            value.withUnsafeBytes { v in
                var kv = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
                var vv = MDB_val(mv_size: v.count, mv_data: UnsafeMutableRawPointer(mutating: v.baseAddress))
                return mdb_put(handle, db.dbi, &kv, &vv, 0)
            }
        }
        try check(rc, "writing a record")
    }

    /// Removes `key` (in a sorted-duplicate table, only the pair `key`/`value` when a
    /// value is given). Returns whether something was removed.
    @discardableResult
    public func delete(_ db: LMDBDatabase, _ key: [UInt8], value: [UInt8]? = nil) throws(StorageError) -> Bool {
        let rc = key.withUnsafeBytes { k in
            var kv = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
            if let value {
                return value.withUnsafeBytes { v in
                    var vv = MDB_val(mv_size: v.count, mv_data: UnsafeMutableRawPointer(mutating: v.baseAddress))
                    return mdb_del(handle, db.dbi, &kv, &vv)
                }
            }
            return mdb_del(handle, db.dbi, &kv, nil)
        }
        if rc == MDB_NOTFOUND { return false }
        try check(rc, "deleting a record")
        return true
    }

    /// In a sorted-duplicate table: whether the pair `key`/`value` is present.
    public func containsPair(_ db: LMDBDatabase, _ key: [UInt8], _ value: [UInt8]) throws(StorageError) -> Bool {
        try withCursor(db) { (c) throws(StorageError) in
            guard let e = try c.seek(key: key, valueAtOrAfter: value) else { return false }
            return e.value == value
        }
    }

    /// The number of entries in a table.
    public func count(_ db: LMDBDatabase) throws(StorageError) -> Int {
        var stat = MDB_stat()
        try check(mdb_stat(handle, db.dbi, &stat), "reading table statistics")
        return stat.ms_entries
    }

    /// Pages a table uses (branch, leaf and overflow), for size figures.
    public func pages(_ db: LMDBDatabase) throws(StorageError) -> Int {
        var stat = MDB_stat()
        try check(mdb_stat(handle, db.dbi, &stat), "reading table statistics")
        return stat.ms_branch_pages + stat.ms_leaf_pages + stat.ms_overflow_pages
    }

    /// Opens a cursor on `db` for the life of `body`.
    public func withCursor<R>(_ db: LMDBDatabase, _ body: (borrowing LMDBCursor) throws(StorageError) -> R) throws(StorageError) -> R {
        let cursor = try LMDBCursor(txn: handle, db: db)
        return try body(cursor)
    }
}

@inline(__always)
func copyOut(_ v: MDB_val) -> [UInt8] {
    guard v.mv_size > 0, let p = v.mv_data else { return [] }
    return Array(UnsafeRawBufferPointer(start: p, count: v.mv_size))
}
