{
  description = "RAVE: verified webhooks to exactly-once tasks for AI agents, with its observability stack";

  inputs = {
    # A supported NixOS release (docs/ci.md: the pin, where it came from and
    # how to move it; nixos/options.toml: the options read at it).
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    sops-nix = {
      url = "github:Mic92/sops-nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = { self, nixpkgs, sops-nix }:
    let
      system = "x86_64-linux";
      inherit (nixpkgs) lib;
      pkgs = nixpkgs.legacyPackages.${system};
      rave = pkgs.callPackage ./nixos/package.nix { };

      host = name: extra: lib.nixosSystem {
        inherit system;
        modules = [
          sops-nix.nixosModules.sops
          ./nixos/hosts/${name}.nix
          { services.rave.package = rave; }
        ] ++ extra;
      };
      # P2 as a throwaway trial: secrets generated at first boot and no SSH
      # keys, which the production hosts refuse (production-checks.nix).
      trial = [{ services.rave-security.trialImage = true; }];

      # A qcow2 of a host, bootable by BIOS (legacy partition table).
      image = name:
        let machine = self.nixosConfigurations.${name};
        in import "${nixpkgs}/nixos/lib/make-disk-image.nix" {
          inherit (machine) config pkgs lib;
          name = "rave-${name}";
          format = "qcow2";
          partitionTableType = "legacy";
          diskSize = "auto";
          additionalSpace = "4096M";
        };

      # `nix run .#<image>`: boots it headless on a throwaway overlay, with
      # the host's 3002 and 2222 forwarded to the guest's 3002 and 22. QEMU
      # runs as a child, not exec'd, so the EXIT trap removes the overlay.
      boot = name: pkgs.writeShellApplication {
        name = "rave-boot-${name}";
        runtimeInputs = [ pkgs.qemu_kvm pkgs.coreutils ];
        text = ''
          work=$(mktemp -d)
          trap 'rm -rf "$work"' EXIT
          qemu-img create -q -f qcow2 -F qcow2 -b ${self.packages.${system}.${name}}/nixos.qcow2 "$work/disk.qcow2"
          accel=tcg
          if [ -w /dev/kvm ]; then accel=kvm; fi
          qemu-system-x86_64 -machine accel="$accel" -m "''${RAVE_VM_MEMORY:-2048}" -smp 2 \
            -nographic -drive file="$work/disk.qcow2",if=virtio \
            -nic user,model=virtio,hostfwd=tcp:127.0.0.1:3002-:3002,hostfwd=tcp:127.0.0.1:2222-:22
        '';
      };

      vmTest = import ./tests/rave-vm.nix { inherit pkgs self sops-nix; };
      app = drv: { type = "app"; program = lib.getExe drv; };

      # clippy and the unit tests on the vendored workspace, as in scripts/test.
      cargoCheck = pname: command: rave.overrideAttrs (old: {
        inherit pname;
        nativeBuildInputs = old.nativeBuildInputs ++ [ pkgs.clippy ];
        buildPhase = ''
          runHook preBuild
          ${command}
          runHook postBuild
        '';
        doCheck = false;
        installPhase = "touch $out";
      });
    in
    {
      packages.${system} = {
        default = rave;
        inherit rave;
        p0 = image "p0";
        p1-production = image "p1-production";
        p2-production = image "p2-production";
        p2-trial = image "p2-trial";
      };

      # `nix run .#tests.rave-vm`: the VM test's driver, run outside the
      # sandbox (needs KVM); the same test as `checks.x86_64-linux.vm`.
      # legacyPackages, because `nix flake check` wants every apps.<name>
      # to be an app and every packages.<name> a derivation, not a set.
      legacyPackages.${system}.tests.rave-vm = pkgs.writeShellApplication {
        name = "rave-vm";
        text = ''exec ${vmTest.driver}/bin/nixos-test-driver "$@"'';
      };

      nixosModules = {
        rave = { pkgs, lib, ... }: {
          imports = [ ./nixos/modules/rave.nix ];
          services.rave.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
        rave-observability = import ./nixos/modules/observability.nix;
        rave-security = import ./nixos/modules/security.nix;
        rave-dev-secrets = import ./nixos/modules/dev-secrets.nix;
        rave-backups = import ./nixos/modules/backups.nix;
      };

      nixosConfigurations = {
        p0 = host "p0" [ ];
        p1-production = host "p1-production" [ ];
        p2-production = host "p2-production" [ ];
        p2-trial = host "p2-production" trial;
      };

      apps.${system} = {
        # The P0 development VM (nixos-rebuild build-vm), headless.
        qemu = {
          type = "app";
          program = "${self.nixosConfigurations.p0.config.system.build.vm}/bin/run-${self.nixosConfigurations.p0.config.system.name}-vm";
        };
        p1-production = app (boot "p1-production");
        p2-production = app (boot "p2-production");
        p2-trial = app (boot "p2-trial");
      };

      checks.${system} = {
        vm = vmTest;
        clippy = cargoCheck "rave-clippy" "cargo clippy --offline --locked --workspace --all-targets -- -D warnings";
        fmt = pkgs.runCommand "rave-fmt" { nativeBuildInputs = [ pkgs.rustfmt ]; } ''
          find ${./crates} ${./services} ${./tests} -name '*.rs' -print0 | xargs -0 rustfmt --check --edition 2024
          touch $out
        '';
        tests = cargoCheck "rave-tests" "cargo test --offline --locked --workspace --lib --bins";
      };

      formatter.${system} = pkgs.nixpkgs-fmt;
    };
}
