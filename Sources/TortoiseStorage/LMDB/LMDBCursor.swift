import CLMDB

/// A position in a table, for ordered walks. Closed when dropped.
public struct LMDBCursor: ~Copyable {
    let handle: OpaquePointer

    init(txn: OpaquePointer, db: LMDBDatabase) throws(StorageError) {
        var c: OpaquePointer?
        try check(mdb_cursor_open(txn, db.dbi, &c), "opening a cursor")
        handle = c!
    }

    deinit {
        mdb_cursor_close(handle)
    }

    /// A key and its value, copied out of the map.
    public typealias Entry = (key: [UInt8], value: [UInt8])

    private func move(_ op: MDB_cursor_op, key: [UInt8]? = nil, value: [UInt8]? = nil) throws(StorageError) -> Entry? {
        var k = MDB_val()
        var v = MDB_val()
        let rc: Int32
        if let key {
            rc = key.withUnsafeBytes { kb in
                k = MDB_val(mv_size: kb.count, mv_data: UnsafeMutableRawPointer(mutating: kb.baseAddress))
                if let value {
                    return value.withUnsafeBytes { vb in
                        v = MDB_val(mv_size: vb.count, mv_data: UnsafeMutableRawPointer(mutating: vb.baseAddress))
                        return mdb_cursor_get(handle, &k, &v, op)
                    }
                }
                return mdb_cursor_get(handle, &k, &v, op)
            }
        } else {
            rc = mdb_cursor_get(handle, &k, &v, op)
        }
        if rc == MDB_NOTFOUND { return nil }
        try check(rc, "moving a cursor")
        return (copyOut(k), copyOut(v))
    }

    /// Visits the entries from the first at or after `key`, in order, until `body` returns
    /// false or the table ends. `body` sees each key and value in place in the map, valid
    /// only during its call: nothing is copied, so a walk that skips entries costs no
    /// allocation for them.
    public func walk(from key: [UInt8],
                     _ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws(StorageError) -> Bool) throws(StorageError) {
        var k = MDB_val()
        var v = MDB_val()
        var rc = key.withUnsafeBytes { kb in
            k = MDB_val(mv_size: kb.count, mv_data: UnsafeMutableRawPointer(mutating: kb.baseAddress))
            return mdb_cursor_get(handle, &k, &v, MDB_SET_RANGE)
        }
        while rc != MDB_NOTFOUND {
            try check(rc, "moving a cursor")
            guard try body(UnsafeRawBufferPointer(start: k.mv_data, count: k.mv_size),
                           UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size)) else { return }
            rc = mdb_cursor_get(handle, &k, &v, MDB_NEXT)
        }
    }

    /// The first entry.
    public func first() throws(StorageError) -> Entry? { try move(MDB_FIRST) }
    /// The last entry.
    public func last() throws(StorageError) -> Entry? { try move(MDB_LAST) }
    /// The entry after the current one (the next duplicate first, in a sorted-duplicate table).
    public func next() throws(StorageError) -> Entry? { try move(MDB_NEXT) }
    /// The entry before the current one.
    public func previous() throws(StorageError) -> Entry? { try move(MDB_PREV) }
    /// The first entry whose key is at or after `key`.
    public func seek(atOrAfter key: [UInt8]) throws(StorageError) -> Entry? { try move(MDB_SET_RANGE, key: key) }
    /// In a sorted-duplicate table: the first pair at `key` whose value is at or after `value`.
    public func seek(key: [UInt8], valueAtOrAfter value: [UInt8]) throws(StorageError) -> Entry? {
        try move(MDB_GET_BOTH_RANGE, key: key, value: value)
    }
    /// In a sorted-duplicate table: the first duplicate of `key`.
    public func seek(key: [UInt8]) throws(StorageError) -> Entry? { try move(MDB_SET_KEY, key: key) }
    /// The next duplicate of the current key, or nil.
    public func nextDuplicate() throws(StorageError) -> Entry? { try move(MDB_NEXT_DUP) }
    /// The previous duplicate of the current key, or nil.
    public func previousDuplicate() throws(StorageError) -> Entry? { try move(MDB_PREV_DUP) }
    /// The last duplicate of the current key.
    public func lastDuplicate() throws(StorageError) -> Entry? { try move(MDB_LAST_DUP) }
    /// How many duplicates the current key has.
    public func duplicateCount() throws(StorageError) -> Int {
        var n: Int = 0
        try check(mdb_cursor_count(handle, &n), "counting duplicates")
        return n
    }
    /// Deletes the entry under the cursor.
    public func deleteCurrent() throws(StorageError) {
        try check(mdb_cursor_del(handle, 0), "deleting under a cursor")
    }

    /// Writes `value` under `key` (a new pair, in a sorted-duplicate table), leaving the
    /// cursor there: like ``delete(_:value:)``, cheapest for keys in their order.
    public func put(_ key: [UInt8], _ value: [UInt8]) throws(StorageError) {
        let rc = key.withUnsafeBytes { kb in
            value.withUnsafeBytes { vb in
                var k = MDB_val(mv_size: kb.count, mv_data: UnsafeMutableRawPointer(mutating: kb.baseAddress))
                var v = MDB_val(mv_size: vb.count, mv_data: UnsafeMutableRawPointer(mutating: vb.baseAddress))
                return mdb_cursor_put(handle, &k, &v, 0)
            }
        }
        try check(rc, "writing a record")
    }

    /// Moves to `key` (in a sorted-duplicate table, to the pair `key`/`value` when a value
    /// is given) and deletes it, if it is there; returns whether it was. Nothing is copied
    /// out, and a cursor that stands on the right page already skips the walk down from
    /// the root: deleting many keys in their order through one cursor is much cheaper
    /// than deleting each on its own.
    @discardableResult
    public func delete(_ key: [UInt8], value: [UInt8]? = nil) throws(StorageError) -> Bool {
        let rc = key.withUnsafeBytes { kb in
            var k = MDB_val(mv_size: kb.count, mv_data: UnsafeMutableRawPointer(mutating: kb.baseAddress))
            guard let value else {
                var v = MDB_val()
                return mdb_cursor_get(handle, &k, &v, MDB_SET)
            }
            return value.withUnsafeBytes { vb in
                var v = MDB_val(mv_size: vb.count, mv_data: UnsafeMutableRawPointer(mutating: vb.baseAddress))
                return mdb_cursor_get(handle, &k, &v, MDB_GET_BOTH)
            }
        }
        if rc == MDB_NOTFOUND { return false }
        try check(rc, "finding a record to delete")
        try check(mdb_cursor_del(handle, 0), "deleting a record")
        return true
    }
}
