# nginx's locations for Grafana under /grafana/ on the public port. Grafana's
# UI loads scripts and styles from itself, so these locations relax the
# API's `default-src 'none'`; each repeats every other header of the
# server, since nginx drops inherited add_header lines where a location has
# its own. `/grafana` redirects to `/grafana/`; Grafana Live's websocket
# (`/grafana/api/live/`) is upgraded.
#
# Plain Nix with no nixpkgs: the test command runs `nginx -t` with it.
{ port ? 3000 }:
let
  headers = ''
    add_header Strict-Transport-Security "max-age=63072000" always;
    add_header X-Content-Type-Options "nosniff" always;
    add_header X-Frame-Options "DENY" always;
    add_header Referrer-Policy "no-referrer" always;
    add_header Content-Security-Policy "default-src 'self'; script-src 'self' 'unsafe-eval' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'" always;
  '';
  proxy = ''
    proxy_pass http://127.0.0.1:${toString port};
    proxy_set_header Host $host;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto https;
  '';
in
''
  location = /grafana {
      ${headers}
      return 301 /grafana/;
  }
  location /grafana/ {
      ${proxy}
      ${headers}
  }
  location /grafana/api/live/ {
      ${proxy}
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 1h;
      ${headers}
  }
''
