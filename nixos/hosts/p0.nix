# P0, development: RAVE and its observability stack with secrets generated
# at first boot; root on the serial console without a password. Not for any
# network but your own.
{ lib, ... }:
{
  imports = [ ./common.nix ];
  networking.hostName = lib.mkOverride 1300 "rave-p0";
  services.rave-observability.enable = true;
  services.rave-dev-secrets.enable = true;
  services.getty.autologinUser = "root";
  services.openssh = {
    enable = true;
    settings.PasswordAuthentication = false;
  };
  networking.firewall.allowedTCPPorts = [ 22 ];

  # `nix run .#qemu`: the development VM, headless, 3002 and 22 forwarded.
  virtualisation.vmVariant.virtualisation = {
    memorySize = 2048;
    cores = 2;
    graphics = false;
    forwardPorts = [
      { from = "host"; host.port = 3002; guest.port = 3002; }
      { from = "host"; host.port = 2222; guest.port = 22; }
    ];
  };
}
