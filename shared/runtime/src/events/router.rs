//! A typed event router: handlers register for one event message each and
//! receive it decoded, with its context and the consumer's transaction.
//!
//! ```text
//! let router = Router::new()
//!     .on(|tx, event, activity: pb::ActivityRecorded| {
//!         Box::pin(async move { earn(tx, event, activity).await })
//!     });
//! ```
//!
//! Routes match the envelope's event type, `<source>.<MessageName>` as
//! [`super::outbox::event_type`] makes it. [`Router::on`] takes the source
//! from the message's proto package (`laurel.<source>.v1`); [`Router::on_source`]
//! names it; [`Router::route`] takes a handler type instead of a function. Events no route matches are acknowledged and counted as skipped.

use std::{collections::HashMap, marker::PhantomData, sync::Arc};

use futures::future::BoxFuture;
use prost::{Message, Name};
use sqlx::PgConnection;

use super::handler::{EventContext, EventHandler, Handled, HandlerError};

/// Handles one decoded event message of type `T`.
pub trait Handle<T>: Send + Sync + 'static {
    /// Applies `message` using `tx`.
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a EventContext,
        message: T,
    ) -> BoxFuture<'a, Result<(), HandlerError>>;
}

impl<T, F> Handle<T> for F
where
    F: for<'a> Fn(
            &'a mut PgConnection,
            &'a EventContext,
            T,
        ) -> BoxFuture<'a, Result<(), HandlerError>>
        + Send
        + Sync
        + 'static,
{
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a EventContext,
        message: T,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        self(tx, event, message)
    }
}

/// One route with its message type erased.
trait Route: Send + Sync {
    fn dispatch<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a EventContext,
    ) -> BoxFuture<'a, Result<(), HandlerError>>;
}

struct Typed<T, H> {
    handler: H,
    message: PhantomData<fn() -> T>,
}

impl<T, H> Route for Typed<T, H>
where
    T: Message + Name + Default + 'static,
    H: Handle<T>,
{
    fn dispatch<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a EventContext,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        let decoded = match &event.envelope.payload {
            Some(any) => any.to_msg::<T>().map_err(HandlerError::terminal),
            None => Err(HandlerError::terminal(anyhow::anyhow!(
                "event without payload"
            ))),
        };
        match decoded {
            Ok(message) => self.handler.handle(tx, event, message),
            Err(error) => Box::pin(async move { Err(error) }),
        }
    }
}

/// Routes events to typed handlers by event type.
#[derive(Clone, Default)]
pub struct Router {
    routes: HashMap<String, Arc<dyn Route>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The source of a message in package `laurel.<source>.v1`.
pub fn source_of_package(package: &str) -> Option<&str> {
    let mut parts = package.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("laurel"), Some(source), Some(_version), None) if !source.is_empty() => Some(source),
        _ => None,
    }
}

impl Router {
    /// A router with no routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `T`, published by the service its package names
    /// (`laurel.<source>.v1`), to the function `handler`.
    ///
    /// # Panics
    /// When `T`'s package does not name a source: use [`Router::on_source`].
    pub fn on<T, F>(self, handler: F) -> Self
    where
        T: Message + Name + Default + 'static,
        F: for<'a> Fn(
                &'a mut PgConnection,
                &'a EventContext,
                T,
            ) -> BoxFuture<'a, Result<(), HandlerError>>
            + Send
            + Sync
            + 'static,
    {
        let source = source_of_package(T::PACKAGE).unwrap_or_else(|| {
            panic!(
                "{} is not in a laurel.<source>.v1 package: use on_source",
                T::full_name()
            )
        });
        let source = source.to_owned();
        self.route::<T, F>(&source, handler)
    }

    /// Routes `T` published by `source` to the function `handler`.
    pub fn on_source<T, F>(self, source: &str, handler: F) -> Self
    where
        T: Message + Name + Default + 'static,
        F: for<'a> Fn(
                &'a mut PgConnection,
                &'a EventContext,
                T,
            ) -> BoxFuture<'a, Result<(), HandlerError>>
            + Send
            + Sync
            + 'static,
    {
        self.route::<T, F>(source, handler)
    }

    /// Routes `T` published by `source` to `handler` (a type implementing
    /// [`Handle`]); a later route for the same event type replaces an
    /// earlier one.
    pub fn route<T, H>(mut self, source: &str, handler: H) -> Self
    where
        T: Message + Name + Default + 'static,
        H: Handle<T>,
    {
        self.routes.insert(
            super::outbox::event_type::<T>(source),
            Arc::new(Typed {
                handler,
                message: PhantomData,
            }),
        );
        self
    }

    /// The event types routed.
    pub fn event_types(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(String::as_str)
    }
}

impl EventHandler for Router {
    fn accepts(&self, event_type: &str) -> bool {
        self.routes.contains_key(event_type)
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a EventContext,
    ) -> BoxFuture<'a, Result<Handled, HandlerError>> {
        Box::pin(async move {
            match self.routes.get(event.event_type()) {
                Some(route) => route.dispatch(tx, event).await.map(|()| Handled::Applied),
                None => Ok(Handled::Skipped),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::source_of_package;

    #[test]
    fn the_source_is_the_second_part_of_a_laurel_package() {
        assert_eq!(source_of_package("laurel.member.v1"), Some("member"));
        assert_eq!(source_of_package("laurel.points.v2"), Some("points"));
    }

    #[test]
    fn other_packages_name_no_source() {
        assert_eq!(source_of_package("google.protobuf"), None);
        assert_eq!(source_of_package("laurel.member"), None);
        assert_eq!(source_of_package("laurel.member.v1.inner"), None);
        assert_eq!(source_of_package(""), None);
    }
}
