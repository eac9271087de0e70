import Foundation

/// The brokers the load generator drives, each through its own protocol.
enum Peer: String, CaseIterable, Sendable {
    case tortoise = "TortoiseMQ"
    case beanstalkd
    case rabbitmq = "RabbitMQ"
}

/// A producer connection: `put` returns once the broker confirmed the task durable.
protocol BenchProducer: AnyObject {
    func put(_ payload: [UInt8]) throws
    /// Sends `payload`s keeping up to `window` unconfirmed; stops sending at `deadline`
    /// (or after `limit` tasks) and returns how many were confirmed.
    func putWindowed(window: Int, deadline: DispatchTime, limit: Int, payload: () -> [UInt8]) throws -> Int
}

/// A worker connection with prefetch 1 and manual acks.
protocol BenchConsumer: AnyObject {
    /// The next task's handle and payload, or nil when none comes within `timeout`.
    func next(timeout: Double) throws -> (UInt64, [UInt8])?
    /// Acknowledges it.
    func ack(_ handle: UInt64) throws
    /// Waits for the confirmations of every ack sent, where the protocol has them.
    func finish() throws
}

extension BenchConsumer {
    func finish() throws {}
}

func makeProducer(_ peer: Peer, port: Int, queue: String) throws -> BenchProducer {
    switch peer {
    case .tortoise: return try TortoiseProducer(port: port, queue: queue)
    case .beanstalkd: return try BeanstalkProducer(port: port, queue: queue)
    case .rabbitmq: return try RabbitProducer(port: port, queue: queue)
    }
}

func makeConsumer(_ peer: Peer, port: Int, queue: String) throws -> BenchConsumer {
    switch peer {
    case .tortoise: return try TortoiseConsumer(port: port, queue: queue)
    case .beanstalkd: return try BeanstalkConsumer(port: port, queue: queue)
    case .rabbitmq: return try RabbitConsumer(port: port, queue: queue)
    }
}

/// A line-protocol producer whose puts are answered in order (TortoiseMQ and beanstalkd).
class LineProducer: BenchProducer {
    let socket: BlockingSocket
    init(port: Int) throws { socket = try BlockingSocket(port: port) }
    func command(_ payload: [UInt8]) -> [UInt8] { fatalError("abstract") }
    func checkReply(_ line: String) throws { fatalError("abstract") }

    func put(_ payload: [UInt8]) throws {
        try socket.write(command(payload))
        try checkReply(try socket.readLine())
    }

    func putWindowed(window: Int, deadline: DispatchTime, limit: Int, payload: () -> [UInt8]) throws -> Int {
        var sent = 0
        var confirmed = 0
        while sent < min(window, limit) { try socket.write(command(payload())); sent += 1 }
        while confirmed < sent {
            try checkReply(try socket.readLine())
            confirmed += 1
            if sent < limit && DispatchTime.now() < deadline {
                try socket.write(command(payload()))
                sent += 1
            }
        }
        return confirmed
    }
}

final class TortoiseProducer: LineProducer {
    let header: [UInt8]
    init(port: Int, queue: String) throws {
        header = Array("PUT \(queue) ".utf8)
        try super.init(port: port)
    }
    override func command(_ payload: [UInt8]) -> [UInt8] { header + Array("\(payload.count)\r\n".utf8) + payload + [13, 10] }
    override func checkReply(_ line: String) throws {
        guard line.hasPrefix("OK ") else { throw BlockingSocket.Failure(description: "TortoiseMQ PUT: \(line)") }
    }
}

final class BeanstalkProducer: LineProducer {
    init(port: Int, queue: String) throws {
        try super.init(port: port)
        try socket.write("use \(queue)\r\n")
        guard try socket.readLine().hasPrefix("USING") else { throw BlockingSocket.Failure(description: "beanstalkd use") }
    }
    override func command(_ payload: [UInt8]) -> [UInt8] { Array("put 0 0 120 \(payload.count)\r\n".utf8) + payload + [13, 10] }
    override func checkReply(_ line: String) throws {
        guard line.hasPrefix("INSERTED") else { throw BlockingSocket.Failure(description: "beanstalkd put: \(line)") }
    }
}

final class RabbitProducer: BenchProducer {
    let client: AMQPClient
    let queue: String
    init(port: Int, queue: String) throws {
        client = try AMQPClient(port: port)
        self.queue = queue
        try client.declareDurableQueue(queue)
        try client.enableConfirms()
    }
    func put(_ payload: [UInt8]) throws {
        try client.publish(queue, payload)
        while !client.unconfirmed.isEmpty { try client.awaitConfirms() }
    }
    func putWindowed(window: Int, deadline: DispatchTime, limit: Int, payload: () -> [UInt8]) throws -> Int {
        var sent = 0
        while true {
            while client.unconfirmed.count < window && sent < limit && DispatchTime.now() < deadline {
                try client.publish(queue, payload())
                sent += 1
            }
            if client.unconfirmed.isEmpty { break }
            try client.awaitConfirms()
            if (sent >= limit || DispatchTime.now() >= deadline) && client.unconfirmed.isEmpty { break }
        }
        return sent
    }
}

/// A TortoiseMQ worker that, like an AMQP consumer, does not wait for an ACK's
/// confirmation before it takes the next task: the broker pushes the next `MSG` right
/// after the `ACK` (without waiting for its disk flush); the `OK`s are counted as they
/// come and all are awaited at the end (`finish()`).
final class TortoiseConsumer: BenchConsumer {
    let socket: BlockingSocket
    private var stashed: [(UInt64, [UInt8])] = []
    private var unconfirmedAcks = 0
    init(port: Int, queue: String) throws {
        socket = try BlockingSocket(port: port)
        try socket.write("SUB \(queue)\r\n")
        unconfirmedAcks = 1 // the SUB's OK
    }
    /// Fails the task with `error` (confirmed like an ack: counted, awaited by `finish()`).
    func nack(_ handle: UInt64, error: String) throws {
        try socket.write("NACK \(handle) \(error.utf8.count)\r\n\(error)\r\n")
        unconfirmedAcks += 1
    }
    private func readFrame() throws {
        let line = try socket.readLine()
        if line == "OK" { unconfirmedAcks -= 1; return }
        let w = line.split(separator: " ")
        guard w.first == "MSG", w.count == 5, let id = UInt64(w[1]), let n = Int(w[4]) else {
            throw BlockingSocket.Failure(description: "TortoiseMQ: unexpected \(line)")
        }
        let body = try socket.read(n + 2)
        stashed.append((id, Array(body.prefix(n))))
    }
    func next(timeout: Double) throws -> (UInt64, [UInt8])? {
        socket.setReadTimeout(timeout)
        do {
            while stashed.isEmpty { try readFrame() }
        } catch let e as BlockingSocket.Failure where e.description == "timeout" {
            return nil
        }
        return stashed.removeFirst()
    }
    func ack(_ handle: UInt64) throws {
        try socket.write("ACK \(handle)\r\n")
        unconfirmedAcks += 1
    }
    func finish() throws {
        socket.setReadTimeout(0)
        while unconfirmedAcks > 0 { try readFrame() }
    }
}

final class BeanstalkConsumer: BenchConsumer {
    let socket: BlockingSocket
    init(port: Int, queue: String) throws {
        socket = try BlockingSocket(port: port)
        try socket.write("watch \(queue)\r\nignore default\r\n")
        _ = try socket.readLine(); _ = try socket.readLine()
    }
    func next(timeout: Double) throws -> (UInt64, [UInt8])? {
        try socket.write("reserve-with-timeout \(max(1, Int(timeout)))\r\n")
        let line = try socket.readLine()
        if line.hasPrefix("TIMED_OUT") { return nil }
        let w = line.split(separator: " ")
        guard w.first == "RESERVED", w.count == 3, let id = UInt64(w[1]), let n = Int(w[2]) else {
            throw BlockingSocket.Failure(description: "beanstalkd reserve: \(line)")
        }
        return (id, Array(try socket.read(n + 2).prefix(n)))
    }
    func ack(_ handle: UInt64) throws {
        try socket.write("delete \(handle)\r\n")
        guard try socket.readLine().hasPrefix("DELETED") else { throw BlockingSocket.Failure(description: "beanstalkd delete") }
    }
}

final class RabbitConsumer: BenchConsumer {
    let client: AMQPClient
    init(port: Int, queue: String) throws {
        client = try AMQPClient(port: port)
        try client.declareDurableQueue(queue)
        try client.consume(queue, prefetch: 1)
    }
    func next(timeout: Double) throws -> (UInt64, [UInt8])? {
        client.setReadTimeout(timeout)
        do {
            let d = try client.nextDelivery()
            return (d.tag, d.body)
        } catch let e as BlockingSocket.Failure where e.description == "timeout" {
            return nil
        }
    }
    func ack(_ handle: UInt64) throws { try client.ack(handle) }
}
