use std::collections::{HashMap, HashSet};

use tokio::task::JoinSet;

use crate::helpers::{sample, spawn_stack};

#[tokio::test]
async fn a_thousand_concurrent_posts_of_a_hundred_deliveries_store_a_hundred_events() {
    let stack = spawn_stack().await;
    let mut requests = JoinSet::new();
    for i in 0..1000usize {
        let delivery = format!("delivery-{}", i % 100);
        let body = format!("{{\"n\":{}}}", i % 100).into_bytes();
        let request = stack.github(&delivery, &body);
        requests.spawn(async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let receipt: serde_json::Value = response.json().await.unwrap();
            (
                i % 100,
                status,
                receipt["task_id"].as_str().unwrap().to_owned(),
            )
        });
    }
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    let mut task_ids: HashMap<usize, HashSet<String>> = HashMap::new();
    while let Some(result) = requests.join_next().await {
        let (delivery, status, task_id) = result.unwrap();
        *statuses.entry(status).or_default() += 1;
        task_ids.entry(delivery).or_default().insert(task_id);
    }
    assert_eq!(statuses.get(&202), Some(&100), "{statuses:?}");
    assert_eq!(statuses.get(&200), Some(&900), "{statuses:?}");
    assert!(
        task_ids.values().all(|ids| ids.len() == 1),
        "each duplicate is answered with its original's task_id"
    );
    assert_eq!(stack.stored_count().await, 100);

    let metrics = stack.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "webhook_events_processed_total{source=\"github\"}"
        ),
        100.0
    );
    assert_eq!(
        sample(
            &metrics,
            "webhook_events_deduplicated_total{source=\"github\"}"
        ),
        900.0
    );
    assert_eq!(
        sample(
            &metrics,
            "webhook_requests_total{source=\"github\",outcome=\"accepted\"}"
        ),
        100.0
    );
}
