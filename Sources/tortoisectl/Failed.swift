import ArgumentParser

struct Failed: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Search the failed tasks, newest first.",
        discussion: """
            Examples:
              tortoisectl failed nightmare
              tortoisectl failed queue:emails since:1h "connection refused" --limit 50
            """
    )

    @ParentCommand var parent: Tortoisectl
    @Argument(help: "Query words, joined with spaces.") var query: [String] = []
    @Option(help: "Show at most this many tasks.") var limit = 20
    @Flag(help: "Print the broker's JSON.") var json = false

    func validate() throws {
        guard limit >= 0 else { throw ValidationError("--limit must be 0 or more") }
    }

    func run() async throws {
        let text = query.joined(separator: " ")
        let page = try await withBroker(parent.connection) { try await $0.failed(text, limit: limit) }
        if json {
            print(Format.json(page))
            return
        }
        if page.total == 0 {
            print("no failed tasks match\(text.isEmpty ? "" : " '\(text)'")")
            return
        }
        print(Format.failedTable(page.tasks))
        print("\n\(page.tasks.count) of \(page.total) failed task\(page.total == 1 ? "" : "s")\(page.tasks.count < page.total ? " (--limit to see more)" : "")")
    }
}
