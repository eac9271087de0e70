import ArgumentParser

/// `tortoise-bench`: the project's benchmarks. Each prints its figures beside a peer or
/// baseline measured in the same run, since these machines are shared and noisy.
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tortoise-bench",
        abstract: "TortoiseMQ benchmarks (figures as ratios to a baseline measured in the same run).",
        subcommands: [StorageBench.self, SearchBench.self, CompareBench.self, ScaleBench.self, PipeliningBench.self, HostileBench.self, RoundTripBench.self, RabbitScaleBench.self]
    )
}
