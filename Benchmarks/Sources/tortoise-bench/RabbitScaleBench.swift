import ArgumentParser
import Foundation

/// RabbitMQ's side of the scale figures (`Benchmarks/scale-rabbit.sh` starts, stops and
/// restarts the node): memory with 1,010,000 waiting persistent messages and after they
/// drain, and 1,000 queues with 2,000 consumer connections at once.
struct RabbitScaleBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rabbit-scale",
        abstract: "RabbitMQ's memory and connection figures at scale (run by Benchmarks/scale-rabbit.sh)."
    )

    @Option(help: "seed (publish and measure) or drain (measure, drain, connections).") var phase: String
    @Option(help: "RabbitMQ's AMQP port.") var port: Int
    @Option(help: "The PID of the Erlang VM (beam.smp), for its memory.") var pid: Int32
    @Option(help: "Messages to publish.") var messages = 1_010_000
    @Option(help: "Queues for the connection test.") var queues = 1000
    @Option(help: "Consumer connections for the connection test.") var workers = 2000

    /// The node's memory, as printed; after `settle` seconds (RabbitMQ frees lazily).
    func memory(settle: Double = 0) -> String {
        if settle > 0 { Thread.sleep(forTimeInterval: settle) }
        let m = ScaleBench.memory(pid)
        return "anonymous RSS \(mib(m.anon)) (total RSS \(mib(m.total)))"
    }

    func run() throws {
        switch phase {
        case "seed": try seed()
        case "drain": try drain()
        default: throw ValidationError("--phase is seed or drain")
        }
    }

    func seed() throws {
        let t0 = DispatchTime.now()
        let payload = [UInt8](repeating: 46, count: 100)
        let sent = try threads(4) { i in
            try RabbitProducer(port: port, queue: "q\(i)").putWindowed(window: 64, deadline: .distantFuture, limit: messages / 4, payload: { payload })
        }.reduce(0, +)
        let secs = elapsedSeconds(since: t0)
        print("RabbitMQ: published and confirmed \(sent) persistent messages in \(String(format: "%.1f", secs)) s")
        print("RabbitMQ: memory with them waiting: \(memory(settle: 5))")
    }

    func drain() throws {
        print("RabbitMQ: memory after the restart with them waiting: \(memory())")
        let t0 = DispatchTime.now()
        let consumed = try threads(8) { i in
            let c = try RabbitConsumer(port: port, queue: "q\(i % 4)")
            var n = 0
            while let (h, _) = try c.next(timeout: 2) {
                try c.ack(h)
                n += 1
            }
            return n
        }.reduce(0, +)
        let secs = elapsedSeconds(since: t0)
        print("RabbitMQ: drained \(consumed) messages with 8 consumers in \(String(format: "%.1f", secs)) s (\(Int(Double(consumed) / secs)) /s)")
        print("RabbitMQ: memory after the drain: \(memory(settle: 5))")

        let many = try ManyConnections.measure(workers: workers, queues: queues, pid: pid, connect: { i in
            let c = try RabbitConsumer(port: port, queue: "many\(i % queues)")
            return (c.client.fd, {
                guard let (h, _) = try c.next(timeout: 1) else { return false }
                try c.ack(h)
                return true
            })
        }, put: { q in
            try RabbitProducer(port: port, queue: "many\(q)").put(Array("task \(q)".utf8))
        })
        print(many.summary(workers: workers, queues: queues, broker: "RabbitMQ: "))
    }
}
