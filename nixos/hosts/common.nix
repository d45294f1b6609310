# What every RAVE image shares: a qcow2-bootable QEMU guest with the RAVE
# modules imported (each host enables what it runs).
{ lib, modulesPath, ... }:
{
  imports = [
    (modulesPath + "/profiles/qemu-guest.nix")
    ../modules/rave.nix
    ../modules/observability.nix
    ../modules/security.nix
    ../modules/dev-secrets.nix
    ../modules/backups.nix
  ];

  # The disk images (nixos/lib/make-disk-image.nix) label their root "nixos".
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
    autoResize = true;
  };
  boot.growPartition = true;
  boot.loader.grub.device = lib.mkDefault "/dev/vda";
  boot.kernelParams = [ "console=ttyS0" ];

  # Host names are defaults weaker than mkDefault (1000), each host's
  # stronger than the one it imports: two definitions at one priority of
  # this equal-merging option would not evaluate, and the NixOS test
  # framework's own `mkDefault <node name>` must win in the VM test.
  networking.hostName = lib.mkOverride 1400 "rave";
  networking.firewall = {
    enable = true;
    allowedTCPPorts = [ 3002 ];
  };
  time.timeZone = "UTC";
  services.journald.extraConfig = "SystemMaxUse=512M";
  nix.settings.experimental-features = [ "nix-command" "flakes" ];

  services.rave.enable = true;
  # pgBackRest: WAL archiving, weekly full and daily differential backups.
  services.rave-backups.enable = true;

  # The release the first installs were made with; it picks stateful
  # defaults (PostgreSQL's major version among them) and must not follow the
  # nixpkgs pin: moving it would move existing databases (docs/deploy.md).
  system.stateVersion = "25.11";
}
