use palisade_offload::{BlockingPool, CancelToken};
use tower::{Service, ServiceExt};

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn runs_a_blocking_call() {
    let pool = BlockingPool::builder(2).build().unwrap();
    let mut svc = pool.service_fn(|n: u32, _: &CancelToken| Ok::<_, std::io::Error>(n + 1));
    assert_eq!(svc.ready().await.unwrap().call(41).await.unwrap(), 42);
    assert_eq!(pool.handle().completed(), 1);
    assert_eq!(pool.handle().running(), 0);
}
