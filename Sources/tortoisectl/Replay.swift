import ArgumentParser

/// What `replay` and `delete` share: a query that must not be empty unless `--all`.
struct GuardedQuery: ParsableArguments {
    @Argument(help: "Query words, joined with spaces.") var query: [String] = []
    @Flag(help: "Show what would change, and change nothing.") var dryRun = false
    @Flag(help: "Allow an empty query, which matches every failed task.") var all = false

    var text: String { query.joined(separator: " ") }

    func validate() throws {
        if text.trimmingCharacters(in: .whitespaces).isEmpty && !all {
            throw ValidationError("an empty query matches every failed task; add --all if you mean that")
        }
    }

    /// Prints the tasks the query matches now.
    func preview(_ connection: ConnectionOptions, verb: String) async throws {
        let page = try await withBroker(connection) { try await $0.failed(text, limit: 1000) }
        if page.total > 0 { print(Format.failedTable(page.tasks)) }
        if page.tasks.count < page.total { print("... and \(page.total - page.tasks.count) more") }
        print("would \(verb) \(page.total) task\(page.total == 1 ? "" : "s") (dry run: nothing changed)")
    }
}

import Foundation

struct Replay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Put the matching failed tasks back on their queues, in one atomic step.",
        discussion: """
            The tasks keep their ids, go to the back of their queues and count one
            more replay.

            Examples:
              tortoisectl replay nightmare --dry-run
              tortoisectl replay group:3f2a9c0e1b7d4a55
              tortoisectl replay --all
            """
    )

    @ParentCommand var parent: Tortoisectl
    @OptionGroup var options: GuardedQuery

    func run() async throws {
        if options.dryRun {
            try await options.preview(parent.connection, verb: "replay")
            return
        }
        let n = try await withBroker(parent.connection) { try await $0.replay(options.text) }
        print("replayed \(n) tasks")
    }
}

struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove the matching failed tasks for good, in one atomic step.",
        discussion: """
            Examples:
              tortoisectl delete queue:thumbnails before:30d --dry-run
              tortoisectl delete id:42
            """
    )

    @ParentCommand var parent: Tortoisectl
    @OptionGroup var options: GuardedQuery

    func run() async throws {
        if options.dryRun {
            try await options.preview(parent.connection, verb: "delete")
            return
        }
        let n = try await withBroker(parent.connection) { try await $0.delete(options.text) }
        print("deleted \(n) tasks")
    }
}
