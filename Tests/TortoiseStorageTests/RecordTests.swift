import Testing
@testable import TortoiseStorage

/// The task and failure records' encodings, and the fields read from them in place.
@Suite struct RecordTests {
    static func deliveryFields(_ bytes: [UInt8]) -> Result<(deliveries: UInt32, payload: [UInt8]), StorageError> {
        bytes.withUnsafeBytes { raw in
            do throws(StorageError) { return .success(try TaskRecord.deliveryFields(raw)) } catch { return .failure(error) }
        }
    }

    @Test(arguments: [("q", 0), ("a.b_c-d:e", 100), (String(repeating: "n", count: 128), 70_000)])
    func aDeliveryReadsTheDeliveriesAndPayloadItWasStoredWith(queue: String, size: Int) throws {
        let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let rec = TaskRecord(state: .ready, deliveries: 0x0102_0304, replays: 9, seq: 42, readyAt: -5, queue: queue, payload: payload)
        let fields = try Self.deliveryFields(rec.encoded()).get()
        #expect(fields.deliveries == 0x0102_0304)
        #expect(fields.payload == payload)
    }

    @Test func aTruncatedRecordIsCorruptNotACrash() throws {
        let bytes = TaskRecord(state: .ready, deliveries: 1, replays: 0, seq: 1, readyAt: 0, queue: "queue", payload: [1, 2, 3]).encoded()
        for cut in [0, 1, 28, 29, 33] {
            guard case .failure(let e) = Self.deliveryFields(Array(bytes.prefix(cut))) else {
                Issue.record("a record cut to \(cut) bytes was read")
                continue
            }
            #expect(e.code == .corrupt)
        }
        // Cut inside the payload, it is read as a shorter payload: the format has no length
        // for it (the record's own length is LMDB's).
        #expect(try Self.deliveryFields(Array(bytes.prefix(35))).get().payload == [1])
    }

    static func groupAndQueue(_ bytes: [UInt8]) -> Result<(group: UInt64, queue: String), StorageError> {
        bytes.withUnsafeBytes { raw in
            do throws(StorageError) { return .success(try FailedTask.groupAndQueue(raw)) } catch { return .failure(error) }
        }
    }

    @Test(arguments: [("q", ""), ("a.b_c-d:e", "timeout after 30 s"), (String(repeating: "n", count: 128), String(repeating: "é", count: 5000))])
    func countingByGroupReadsTheGroupAndQueueAFailureWasStoredWith(queue: String, error: String) throws {
        let f = FailedTask(id: 7, queue: queue, error: error, group: 0xF00D_CAFE_0102_0304, deliveries: 3, replays: 1,
                           failedAt: 1_700_000_000_000, payload: [1, 2, 3])
        let fields = try Self.groupAndQueue(f.encoded()).get()
        #expect(fields.group == 0xF00D_CAFE_0102_0304)
        #expect(fields.queue == queue)
    }

    @Test func aTruncatedFailureIsCorruptNotACrash() throws {
        let bytes = FailedTask(id: 7, queue: "queue", error: "e", group: 1, deliveries: 1, replays: 0, failedAt: 0, payload: []).encoded()
        for cut in [0, 16, 27, 28, 32] {
            guard case .failure(let e) = Self.groupAndQueue(Array(bytes.prefix(cut))) else {
                Issue.record("a failure cut to \(cut) bytes was read")
                continue
            }
            #expect(e.code == .corrupt)
        }
        #expect(try Self.groupAndQueue(Array(bytes.prefix(33))).get().queue == "queue")
    }

    @Test func queueCountsOutOfRangeAreCorruptNotACrash() throws {
        let counts = QueueCounts(ready: 3, inflight: 2, delayed: 1, failed: Int.max)
        #expect(try QueueCounts(decoding: counts.encoded()) == counts)
        var damaged = counts.encoded()
        damaged[24] = 0x80  // failed: 2^63 + ..., past Int.max
        #expect(throws: StorageError.self) { try QueueCounts(decoding: damaged) }
        do {
            _ = try QueueCounts(decoding: damaged)
        } catch {
            #expect(error.code == .corrupt)
            #expect(error.message.contains("out of range"))
        }
        #expect(throws: StorageError.self) { try QueueCounts(decoding: Array(counts.encoded().prefix(31))) }
    }
}
