use yaml_rust2::Yaml;

use repo_test_support::flake_outputs;
pub use repo_test_support::{binary, repo};

pub fn pipeline() -> Yaml {
    let text = std::fs::read_to_string(repo().join(".gitlab-ci.yml")).expect(".gitlab-ci.yml");
    yaml_rust2::YamlLoader::load_from_str(&text)
        .expect("valid YAML")
        .remove(0)
}

/// Top-level keys that are not jobs.
const GLOBAL: [&str; 6] = [
    "stages",
    "workflow",
    "variables",
    "default",
    "include",
    "image",
];

/// (name, definition) of every job (hidden `.templates` excluded).
pub fn jobs(pipeline: &Yaml) -> Vec<(String, Yaml)> {
    pipeline
        .as_hash()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| {
            let name = k.as_str()?;
            (!name.starts_with('.') && !GLOBAL.contains(&name))
                .then(|| (name.to_owned(), v.clone()))
        })
        .collect()
}

/// A key of a job, following `extends` into templates.
pub fn key(pipeline: &Yaml, job: &Yaml, key: &str) -> Option<Yaml> {
    if !job[key].is_badvalue() {
        return Some(job[key].clone());
    }
    let parent = job["extends"].as_str()?;
    key_of_template(pipeline, parent, key)
}

fn key_of_template(pipeline: &Yaml, name: &str, k: &str) -> Option<Yaml> {
    let template = &pipeline[name];
    key(pipeline, template, k)
}

pub fn lines(yaml: Option<Yaml>) -> Vec<String> {
    match yaml {
        Some(Yaml::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        Some(Yaml::String(s)) => vec![s],
        _ => Vec::new(),
    }
}

/// The flake's outputs as `.#name` targets.
pub fn flake_targets() -> Vec<String> {
    let targets = flake_outputs(
        r#"names out.packages.x86_64-linux
           ++ map (n: "checks.x86_64-linux." + n) (names out.checks.x86_64-linux)
           ++ names out.apps.x86_64-linux
           ++ map (n: "nixosConfigurations." + n + ".config.system.build.toplevel") (names out.nixosConfigurations)"#,
    );
    serde_json::from_value(targets).expect("a list of names")
}
