import Foundation
import NIOCore
import TortoiseStorage

extension FailedTaskInfo {
    /// The wire form of a failed task; a payload that is not UTF-8 goes as base64.
    public init(_ f: FailedTask) {
        let text = String(validatingUTF8Bytes: f.payload)
        self.init(id: f.id, queue: f.queue, error: f.error, group: ErrorFingerprint.hex(f.group),
                  deliveries: f.deliveries, replays: f.replays, failedAt: WireTime.format(f.failedAt),
                  payload: text, payloadBase64: text == nil ? Data(f.payload).base64EncodedString() : nil)
    }
}

extension ErrorGroupInfo {
    /// The wire form of an error group.
    public init(_ g: ErrorGroup) {
        self.init(group: ErrorFingerprint.hex(g.group), example: g.example, count: g.count, queues: g.queues,
                  firstFailedAt: WireTime.format(g.firstFailedAt), lastFailedAt: WireTime.format(g.lastFailedAt))
    }
}

extension String {
    /// The text of `bytes` when they are valid UTF-8, else nil.
    init?(validatingUTF8Bytes bytes: [UInt8]) {
        let s = String(decoding: bytes, as: UTF8.self)
        guard s.utf8.elementsEqual(bytes) else { return nil }
        self = s
    }
}

/// Encodes reply documents as the `JSON` frame's body.
public enum ReplyJSON {
    /// The JSON body of `value`.
    public static func encode(_ value: some Encodable) -> ByteBuffer {
        ByteBuffer(bytes: encode(value, with: encoder()))
    }

    /// The encoder of reply documents (sorted keys: the same bytes for the same document).
    public static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    /// One value as JSON, for a reply written piece by piece.
    public static func encode(_ value: some Encodable, with encoder: JSONEncoder) -> Data {
        (try? encoder.encode(value)) ?? Data("{}".utf8)
    }

    /// Decodes a `JSON` frame's body.
    public static func decode<T: Decodable>(_ type: T.Type, from body: ByteBuffer) throws -> T {
        try JSONDecoder().decode(type, from: Data(body.readableBytesView))
    }
}
