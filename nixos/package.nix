# The whole workspace built once: every service binary and ravectl.
# buildRustPackage vendors Cargo.lock's crates (docs/adr/0009).
{ lib, rustPlatform }:
let
  workspace = builtins.fromTOML (builtins.readFile ../Cargo.toml);
in
rustPlatform.buildRustPackage {
  pname = "rave";
  inherit (workspace.workspace.package) version;
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../crates
      ../services
      ../tests
      # Embedded by ravectl (rules, dashboards, the package lists its
      # install checks) and read by tests.
      ../prometheus
      ../grafana
      ../scripts/lib.sh
      # Embedded by ravectl and installed: where alerts' runbook links point.
      ../docs/runbook.md
    ];
  };
  cargoLock.lockFile = ../Cargo.lock;
  postInstall = ''
    install -Dm644 docs/runbook.md $out/share/doc/rave/runbook.md
  '';
  cargoBuildFlags = [ "--workspace" "--bins" ];
  # Unit and property tests only: the integration tests start PostgreSQL,
  # nginx and Prometheus from Debian's packages and run in scripts/test.
  cargoTestFlags = [ "--workspace" "--lib" "--bins" ];
  doCheck = false;
  meta = {
    description = "RAVE: verified webhooks to exactly-once tasks for AI agents";
    license = lib.licenses.asl20; # Cargo.toml: Apache-2.0
    mainProgram = "ravectl";
    platforms = lib.platforms.linux;
  };
}
