import ArgumentParser

struct Stats: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Counts per queue: ready, in flight, delayed, failed, workers.",
        discussion: "Example: tortoisectl stats --json"
    )

    @ParentCommand var parent: Tortoisectl
    @Flag(help: "Print the broker's JSON.") var json = false

    func run() async throws {
        let stats = try await withBroker(parent.connection) { try await $0.stats() }
        if json {
            print(Format.json(stats))
            return
        }
        let rows = stats.queues.keys.sorted().map { name -> [String] in
            let q = stats.queues[name]!
            return [name, String(q.ready), String(q.inflight), String(q.delayed), String(q.failed), String(q.workers)]
        }
        print(Format.table(["QUEUE", "READY", "INFLIGHT", "DELAYED", "FAILED", "WORKERS"], rows, rightAligned: [1, 2, 3, 4, 5]))
        print("\npruned by retention: \(stats.pruned)")
    }
}
