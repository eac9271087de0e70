import Testing
@testable import TortoiseStorage

/// The task record's encoding, and the fields a delivery reads from it in place.
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
}
