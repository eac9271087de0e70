// swift-tools-version:6.1
// libFuzzer targets for the protocol parser and the query parser. Build and run with
//   bash Fuzz/run.sh [seconds]
// The corpora in Fuzz/Corpus are replayed by the unit tests (TortoiseProtocolTests).
import PackageDescription

let package = Package(
    name: "tortoise-fuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "tortoisemq", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "FuzzCommandParser",
            dependencies: [
                .product(name: "TortoiseProtocol", package: "tortoisemq"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
        .executableTarget(
            name: "FuzzQueryParser",
            dependencies: [
                .product(name: "TortoiseProtocol", package: "tortoisemq"),
                .product(name: "TortoiseStorage", package: "tortoisemq"),
            ],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
    ],
    swiftLanguageModes: [.v6]
)
