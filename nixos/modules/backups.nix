# services.rave-backups: pgBackRest for the host's PostgreSQL (nixpkgs'
# services.pgbackrest, its `default` stanza): WAL archiving, a weekly full
# and a daily differential backup, and each job's result pushed to the
# Pushgateway for RaveBackupFailed and RaveBackupTooOld
# (docs/adr/0016-backups-with-pgbackrest.md, docs/deploy.md "Backups").
# Importable on its own (nixosModules.rave-backups) next to nixosModules.rave.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.rave-backups;
  rave = config.services.rave;
  inherit (lib) mkOption mkEnableOption mkIf types;
  jobs = {
    full = { schedule = cfg.fullSchedule; type = "full"; };
    diff = { schedule = cfg.diffSchedule; type = "diff"; };
  };
  # After every job, failed or not ($SERVICE_RESULT says which); "-": a host
  # without a Pushgateway still has its backups.
  report = lib.concatStringsSep " " [
    "-${rave.package}/bin/ravectl backup-report"
    "--pgbackrest-config /etc/pgbackrest/pgbackrest.conf"
    "--stanza default"
    "--result $SERVICE_RESULT"
    "--pushgateway ${cfg.pushgatewayUrl}"
    "--instance ${config.networking.hostName}"
  ];
in
{
  options.services.rave-backups = {
    enable = mkEnableOption "pgBackRest backups of RAVE's local PostgreSQL";
    repoPath = mkOption {
      type = types.str;
      default = "/var/lib/pgbackrest";
      description = "The backup repository; put it on another disk than the database.";
    };
    retentionFull = mkOption {
      type = types.ints.positive;
      default = 2;
      description = "Full backups kept (with the differentials and WAL they need).";
    };
    fullSchedule = mkOption {
      type = types.str;
      default = "Sun *-*-* 02:00:00";
      description = "When the full backup runs (systemd.time(7)).";
    };
    diffSchedule = mkOption {
      type = types.str;
      default = "Mon..Sat *-*-* 02:00:00";
      description = "When the differential backups run (systemd.time(7)).";
    };
    pushgatewayUrl = mkOption {
      type = types.str;
      default = "http://127.0.0.1:9091";
      description = "Where each job's result is pushed (job rave_backup).";
    };
  };

  config = mkIf cfg.enable {
    assertions = [{
      assertion = rave.database.createLocally;
      message = "services.rave-backups backs up the PostgreSQL on this host; a remote or managed database is backed up where it runs.";
    }];

    services.pgbackrest = {
      enable = true;
      repos.localhost = {
        path = cfg.repoPath;
        retention-full = cfg.retentionFull;
      };
      stanzas.default.jobs = jobs;
    };
    # A lost disk loses at most a minute of WAL not yet archived.
    services.postgresql.settings.archive_timeout = "60s";

    systemd.services = lib.mapAttrs'
      (job: _: lib.nameValuePair "pgbackrest-default-${job}" {
        path = [ pkgs.pgbackrest ];
        serviceConfig.ExecStopPost = report;
      })
      jobs;
  };
}
