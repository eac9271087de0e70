import Foundation

/// Just enough AMQP 0-9-1 for the side-by-side benchmark against RabbitMQ: a durable
/// queue, persistent messages with publisher confirms, and consumers with
/// `basic.qos` prefetch 1 and manual acks. Channel 1 only; heartbeats off.
final class AMQPClient {
    private let socket: BlockingSocket
    /// The connection's socket, to wait on with poll(2).
    var fd: Int32 { socket.fd }
    private var nextTag: UInt64 = 1
    /// Publisher confirms not yet received (delivery tags).
    private(set) var unconfirmed = Set<UInt64>()

    struct Delivery {
        var tag: UInt64
        var body: [UInt8]
    }

    init(port: Int) throws {
        socket = try BlockingSocket(port: port)
        try socket.write([65, 77, 81, 80, 0, 0, 9, 1])
        _ = try expect(10, 10) // Connection.Start
        var w = Writer()
        w.table([:]); w.shortstr("PLAIN"); w.longstr(Array("\u{0}guest\u{0}guest".utf8)); w.shortstr("en_US")
        try method(0, 10, 11, w.bytes)
        var tune = Reader(try expect(10, 30).args)
        let channelMax = tune.u16(); let frameMax = tune.u32(); _ = tune.u16()
        var t = Writer(); t.u16(channelMax); t.u32(frameMax); t.u16(0)
        try method(0, 10, 31, t.bytes)
        var o = Writer(); o.shortstr("/"); o.shortstr(""); o.u8(0)
        try method(0, 10, 40, o.bytes)
        _ = try expect(10, 41)
        var c = Writer(); c.shortstr("")
        try method(1, 20, 10, c.bytes)
        _ = try expect(20, 11)
    }

    func declareDurableQueue(_ name: String) throws {
        var w = Writer(); w.u16(0); w.shortstr(name); w.u8(0x02); w.table([:])
        try method(1, 50, 10, w.bytes)
        _ = try expect(50, 11)
    }

    func enableConfirms() throws {
        try method(1, 85, 10, [0])
        _ = try expect(85, 11)
    }

    /// Publishes a persistent message; returns its delivery tag (confirmed later).
    @discardableResult
    func publish(_ queue: String, _ body: [UInt8]) throws -> UInt64 {
        var m = Writer(); m.u16(0); m.shortstr(""); m.shortstr(queue); m.u8(0)
        var frames = frame(1, 1, [0, 60, 0, 40] + m.bytes)
        var h = Writer(); h.u16(60); h.u16(0); h.u64(UInt64(body.count)); h.u16(0x1000); h.u8(2)
        frames += frame(2, 1, h.bytes)
        frames += frame(3, 1, body)
        try socket.write(frames)
        let tag = nextTag
        nextTag += 1
        unconfirmed.insert(tag)
        return tag
    }

    /// Reads frames until at least one more confirm arrives.
    func awaitConfirms() throws {
        let before = unconfirmed.count
        while unconfirmed.count == before {
            let f = try readMethod()
            guard f.classID == 60 else { continue }
            var r = Reader(f.args)
            let tag = r.u64()
            let multiple = r.u8() & 1 == 1
            if f.methodID == 80 {
                if multiple { unconfirmed = unconfirmed.filter { $0 > tag } } else { unconfirmed.remove(tag) }
            } else if f.methodID == 120 {
                throw BlockingSocket.Failure(description: "RabbitMQ nacked a publish")
            }
        }
    }

    func consume(_ queue: String, prefetch: UInt16) throws {
        var q = Writer(); q.u32(0); q.u16(prefetch); q.u8(0)
        try method(1, 60, 10, q.bytes)
        _ = try expect(60, 11)
        var c = Writer(); c.u16(0); c.shortstr(queue); c.shortstr(""); c.u8(0); c.table([:])
        try method(1, 60, 20, c.bytes)
        _ = try expect(60, 21)
    }

    func setReadTimeout(_ s: Double) { socket.setReadTimeout(s) }

    /// The next delivery (Basic.Deliver, header, body).
    func nextDelivery() throws -> Delivery {
        while true {
            let f = try readMethod()
            guard f.classID == 60 && f.methodID == 60 else { continue }
            var r = Reader(f.args)
            _ = r.shortstr()
            let tag = r.u64()
            let (type, _, header) = try readFrame()
            guard type == 2 else { throw BlockingSocket.Failure(description: "expected a content header") }
            var hr = Reader(header)
            _ = hr.u16(); _ = hr.u16()
            let size = Int(hr.u64())
            var body: [UInt8] = []
            while body.count < size {
                let (t, _, payload) = try readFrame()
                guard t == 3 else { throw BlockingSocket.Failure(description: "expected a body frame") }
                body += payload
            }
            return Delivery(tag: tag, body: body)
        }
    }

    func ack(_ tag: UInt64) throws {
        var w = Writer(); w.u64(tag); w.u8(0)
        try method(1, 60, 80, w.bytes)
    }

    // MARK: Frames

    private func frame(_ type: UInt8, _ channel: UInt16, _ payload: [UInt8]) -> [UInt8] {
        var w = Writer(); w.u8(type); w.u16(channel); w.u32(UInt32(payload.count))
        return w.bytes + payload + [0xCE]
    }

    private func method(_ channel: UInt16, _ cls: UInt16, _ m: UInt16, _ args: [UInt8]) throws {
        var w = Writer(); w.u16(cls); w.u16(m)
        try socket.write(frame(1, channel, w.bytes + args))
    }

    private func readFrame() throws -> (UInt8, UInt16, [UInt8]) {
        var h = Reader(try socket.read(7))
        let type = h.u8(); let channel = h.u16(); let size = Int(h.u32())
        let payload = try socket.read(size)
        guard try socket.read(1) == [0xCE] else { throw BlockingSocket.Failure(description: "bad AMQP frame end") }
        return (type, channel, payload)
    }

    private struct MethodFrame { var classID: UInt16; var methodID: UInt16; var args: [UInt8] }

    private func readMethod() throws -> MethodFrame {
        while true {
            let (type, _, payload) = try readFrame()
            guard type == 1 else { continue } // heartbeats are off; skip anything else
            var r = Reader(payload)
            let cls = r.u16(); let m = r.u16()
            if cls == 10 && m == 50 || cls == 20 && m == 40 {
                var e = Reader(Array(payload[4...]))
                let code = e.u16()
                throw BlockingSocket.Failure(description: "RabbitMQ closed the \(cls == 10 ? "connection" : "channel"): \(code) \(e.shortstr())")
            }
            return MethodFrame(classID: cls, methodID: m, args: Array(payload[4...]))
        }
    }

    private func expect(_ cls: UInt16, _ m: UInt16) throws -> MethodFrame {
        let f = try readMethod()
        guard f.classID == cls && f.methodID == m else {
            throw BlockingSocket.Failure(description: "expected AMQP method \(cls).\(m), got \(f.classID).\(f.methodID)")
        }
        return f
    }

    struct Writer {
        var bytes: [UInt8] = []
        mutating func u8(_ v: UInt8) { bytes.append(v) }
        mutating func u16(_ v: UInt16) { bytes += [UInt8(v >> 8), UInt8(v & 0xFF)] }
        mutating func u32(_ v: UInt32) { for s in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8((v >> UInt32(s)) & 0xFF)) } }
        mutating func u64(_ v: UInt64) { for s in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8((v >> UInt64(s)) & 0xFF)) } }
        mutating func shortstr(_ s: String) { let u = Array(s.utf8); u8(UInt8(u.count)); bytes += u }
        mutating func longstr(_ b: [UInt8]) { u32(UInt32(b.count)); bytes += b }
        mutating func table(_ t: [String: String]) { u32(0) }
    }

    struct Reader {
        let b: [UInt8]
        var i = 0
        init(_ b: [UInt8]) { self.b = b }
        mutating func u8() -> UInt8 { defer { i += 1 }; return i < b.count ? b[i] : 0 }
        mutating func u16() -> UInt16 { UInt16(u8()) << 8 | UInt16(u8()) }
        mutating func u32() -> UInt32 { UInt32(u16()) << 16 | UInt32(u16()) }
        mutating func u64() -> UInt64 { UInt64(u32()) << 32 | UInt64(u32()) }
        mutating func shortstr() -> String {
            let n = Int(u8())
            defer { i += n }
            return String(decoding: b[min(i, b.count)..<min(i + n, b.count)], as: UTF8.self)
        }
    }
}
