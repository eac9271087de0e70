import ArgumentParser

struct Errors: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Failed tasks grouped by error fingerprint, most frequent first.",
        discussion: """
            Replay one group with: tortoisectl replay group:<GROUP>

            Examples:
              tortoisectl errors
              tortoisectl errors queue:emails since:1d
            """
    )

    @ParentCommand var parent: Tortoisectl
    @Argument(help: "Query words, joined with spaces.") var query: [String] = []
    @Option(help: "Show at most this many groups.") var limit = 20
    @Flag(help: "Print the broker's JSON.") var json = false

    func validate() throws {
        guard limit >= 0 else { throw ValidationError("--limit must be 0 or more") }
    }

    func run() async throws {
        let reply = try await withBroker(parent.connection) { try await $0.errors(query.joined(separator: " "), limit: limit) }
        if json {
            print(Format.json(reply))
            return
        }
        if reply.groups.isEmpty {
            print("no failed tasks match")
            return
        }
        print(Format.table(["GROUP", "COUNT", "QUEUES", "LAST", "FIRST", "EXAMPLE"], reply.groups.map { g in
            [g.group, String(g.count), Format.clip(g.queues.joined(separator: ","), 30), Format.ago(g.lastFailedAt),
             Format.ago(g.firstFailedAt), Format.clip(g.example, 70)]
        }, rightAligned: [1]))
    }
}
