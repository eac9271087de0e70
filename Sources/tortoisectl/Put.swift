import ArgumentParser

struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Put a task on a queue; prints its id.",
        discussion: "Example: tortoisectl put emails 'to: bob@example.com'"
    )

    @ParentCommand var parent: Tortoisectl
    @Argument(help: "The queue.") var queue: String
    @Argument(help: "The payload (text).") var payload: String

    func run() async throws {
        let id = try await withBroker(parent.connection) { try await $0.put(queue, payload) }
        print(id)
    }
}
