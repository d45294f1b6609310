//! The previous release's statements against the current schema: a rolling
//! restart runs both releases at once (ARCHITECTURE.md, invariant 25).

#[tokio::test]
async fn every_statement_of_the_previous_release_prepares_against_the_current_migrations() {
    let prepared = test_support::compat::previous_release_statements_prepare(
        include_str!("../../compat/release-statements.sql"),
        async |pool| agent_reporter::store::migrate(&pool).await,
    )
    .await;
    assert!(prepared >= 10, "the snapshot holds {prepared} statements");
}
